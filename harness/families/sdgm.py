"""The skip deep generative model (SDGM, Maaløe et al. 2016: 1.32 +- 0.07% at 100 labels): the
ADGM with the auxiliary variable in the generative model too, a skip connection from a to x.

Inference as the ADGM's, q(a|x), q(y|a,x), q(z|a,y,x); generation p(z) p(y) p(a|y,z) p(x|a,y,z)
(the official code's `sdgmssl.py`), so a is a second stochastic layer that x is generated from.
The bounds are the ADGM's (adgm.py) with these two densities in place of p(a|x,y,z) and p(x|y,z):

  L(x,y) = -[log p(x|a,y,z) + log p(y) - KL(q(z|a,y,x) || p(z)) + log p(a|y,z) - log q(a|x)]

and the same networks, objective, estimators and settings; `ADGM(skip=True)` builds them.
"""

from __future__ import annotations

from functools import partial

from harness.config.families import UNREAD
from harness.families.adgm import ADGM, adgm_loss, classify
from harness.families.m2 import objective_settings
from harness.training.family import Family, register_family

FAMILY = register_family(
    Family(
        name="sdgm",
        build=partial(ADGM.from_variant, skip=True),
        objective=adgm_loss,
        objective_settings=objective_settings,
        classify=classify,
        unread=UNREAD["sdgm"],
    )
)
