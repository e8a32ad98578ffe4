"""The names of the model families a variant can choose (`family`), with what each is. The
families themselves are in `harness.families` (they need torch; this layer does not):
registering one there (`harness.training.family.register_family`) names it here too, so a
variant naming it is checked before anything runs."""

from __future__ import annotations

FAMILIES: dict[str, str] = {
    "m2": "Kingma et al. 2014's M2: q(y|x), q(z|x,y), p(x|y,z); y marginalised exactly, "
    "relaxed by Gumbel-softmax, or supervised alone (`estimator`)",
    "adgm": "Maaløe et al. 2016's auxiliary deep generative model: M2 with an auxiliary "
    "variable a, q(a|x) q(y|a,x) q(z|a,y,x) and p(a|x,y,z); y handled by M2's estimators",
    "sdgm": "Maaløe et al. 2016's skip deep generative model: the ADGM with a in the "
    "generative model too, p(a|y,z) p(x|a,y,z)",
}


# The settings a family does not read (its networks are its own): a variant of the family
# that sets one away from its default is refused, and `m2h show` leaves them out.
_AUXILIARY_UNREAD = frozenset(
    {
        "classifier_net",
        "classifier_layers",
        "classifier_hidden",
        "encoder_net",
        "decoder_net",
        "batch_norm",
        "dropout",
        "regularised",
        "init_std",
    }
)
UNREAD: dict[str, frozenset[str]] = {
    "m2": frozenset({"eval_samples"}),
    "adgm": _AUXILIARY_UNREAD,
    "sdgm": _AUXILIARY_UNREAD,
}


def name_family(name: str, description: str, unread: frozenset[str] = frozenset()) -> None:
    """Make `name` a family variants may choose (its module registers it in training), with
    the settings it does not read."""
    FAMILIES[name] = description
    UNREAD[name] = unread
