"""The numerics version: which arithmetic the harness's training does, bumped by every change
that moves a pinned golden run (harness/tools/golden.py), so a record says which it ran under.

0: the commits before 6e1b6f0 (the records made before its softplus change).
1: the CPU softplus from vectorised operations (6e1b6f0), first pinned 2026-12-07; the records
   of that day and after were trained with it.
"""

NUMERICS_VERSION = 1
# the commit where each version began (`m2h reproduce` tells an older record's version by it)
NUMERICS_STARTS = {1: "6e1b6f0"}
