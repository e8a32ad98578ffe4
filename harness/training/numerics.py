"""The numerics version: which arithmetic the harness's training does, bumped by every change
that moves a pinned golden run (harness/tools/golden.py), so a record says which it ran under.

1: the first pinned (2026-12-07): the CPU softplus from vectorised operations (6e1b6f0) and
   everything before it that the records of that day were trained with.
"""

NUMERICS_VERSION = 1
