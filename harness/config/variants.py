"""An M2 variant: one frozen dataclass holding every knob, and the registry that names them.

Variants are registered timm-style, by decorating a function that returns a `Variant`
(its name is the function's, with dashes; its docstring is the description), or by calling
`register_variant(name, variant)`. `create_variant(name, overrides)` fetches one and applies
`--set key=value` overrides, each parsed to the field's type and validated.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import os
import tomllib
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from harness.config import knobs
from harness.config.datasets import DATASETS
from harness.config.families import FAMILIES, UNREAD
from harness.config.knobs import (
    DATA,
    FAMILY_PARTS,
    M1,
    MODEL,
    NUM_CLASSES,
    OPTIMISATION,
    SHARED_PARTS,
    STOP,
    factor,
    fraction,
    knob,
    non_negative,
    optional_seed,
    positive,
    whole_classes,
)
from harness.config.names import InvalidNameError, check_name
from harness.config.networks import NETWORKS
from harness.files import write_atomically

Estimator = Literal["exact", "gumbel", "gumbel-st", "supervised"]


REGULARISABLE = ("classifier", "encoder", "decoder")  # what `regularised` may name


class VariantError(ValueError):
    """A variant name, override or setting that cannot be used."""


# when a setting changes what a variant does (knobs.knob's `applies`)
def _relaxed(v: Variant) -> bool:
    return v.estimator in ("gumbel", "gumbel-st")


def _annealed(v: Variant) -> bool:
    return v.temperature_schedule == "anneal"


def _generative(v: Variant) -> bool:
    return v.estimator != "supervised"


def _on_m1(v: Variant) -> bool:
    return v.features == "m1"


@dataclass(frozen=True)
class Variant:
    """Every knob of one M2 training run: each declared once, with its part (shared or the
    family's own), rule, reach and age (`knobs.knob`)."""

    name: str = "custom"
    # the model family (config/families.py names them; harness/families/ holds them)
    family: str = knob("m2", MODEL, later=True)
    # how y is handled for unlabelled data
    estimator: Estimator = knob("exact", MODEL)
    # gumbel: KL(q(y|x)||p(y)), or log q(argmax y~|x) as Pixyz
    y_term: Literal["analytic", "sampled"] = knob("analytic", MODEL, applies=_relaxed)
    temperature: float = knob(0.1, MODEL, positive, applies=_relaxed)  # tau_0, relaxed categorical
    temperature_schedule: Literal["fixed", "anneal"] = knob("fixed", MODEL, applies=_relaxed)
    # annealed tau_t = max(tau_min, tau_0 * exp(-rate * step))
    temperature_min: float = knob(0.5, MODEL, positive, applies=_annealed)
    anneal_rate: float = knob(3e-5, MODEL, non_negative, applies=_annealed)
    # steps between temperature updates (Jang et al. use 2000)
    anneal_every: int = knob(1, MODEL, positive, applies=_annealed)
    # weight of the classification term alpha * E_labelled[-log q(y|x)]
    alpha: float = knob(1.0, MODEL, non_negative)
    alpha_scaling: Literal["none", "tutorial", "paper"] = knob("tutorial", MODEL)
    alpha_schedule: Literal["constant", "linear", "cosine"] = knob("constant", MODEL)
    alpha_warmup_epochs: float = knob(
        1.0, MODEL, non_negative, applies=lambda v: v.alpha_schedule != "constant"
    )
    # per-batch: mean_l L + mean_u U + alpha mean_l CE (the tutorial); per-row: every image of
    # the batch weighs the same, as the paper's sums over the data; sum: the sums themselves,
    # sum_l L + sum_u U + alpha sum_l CE (Pyro's ELBO, whose steps are not divided by their rows)
    term_weighting: Literal["per-batch", "per-row", "sum"] = knob(
        "per-batch", MODEL, applies=_generative
    )
    # data
    dataset: str = knob("mnist", DATA)  # config/datasets.py names them; training/data.py holds them
    labels: int = knob(100, DATA, whole_classes)
    # images held out from the end of the training file (never trained on)
    validation: int = knob(0, DATA, non_negative)
    # the initialisation, the batches and the noise (and the labels by default)
    seed: int = knob(0, DATA, knobs.seed)
    # the labelled subset's draw (None: the run's seed, so one seed fixes both): a run with
    # label_seed == seed is the run without it, and a cell with a fixed label_seed holds one
    # labelled subset over its seeds
    label_seed: int | None = knob(None, DATA, optional_seed, later=True)
    # architecture: the networks (config/networks.py names them) and their sizes
    hidden: int = knob(512, MODEL, positive)
    activation: Literal["relu", "softplus"] = knob("relu", MODEL)
    z_dim: int = knob(64, MODEL, positive, applies=_generative)
    # 0: PyTorch's default init; >0: weights ~ N(0, init_std^2), zero biases
    init_std: float = knob(0.0, MODEL, non_negative)
    classifier_net: str = knob("mlp", MODEL, later=True)  # q(y|x)
    classifier_layers: int = knob(1, MODEL, positive, later=True)  # hidden layers
    # units per hidden layer (0: `hidden`)
    classifier_hidden: int = knob(0, MODEL, non_negative, later=True)
    # the part of q(z|x,y) that reads x
    encoder_net: str = knob("mlp", MODEL, applies=_generative, later=True)
    # hidden layers of q(z|x,y), the one where x and y meet included
    encoder_layers: int = knob(1, MODEL, positive, applies=_generative, later=True)
    encoder_hidden: int = knob(0, MODEL, non_negative, applies=_generative, later=True)
    # hidden layers of p(x|y,z), the one where z and y meet included
    decoder_layers: int = knob(1, MODEL, positive, applies=_generative, later=True)
    decoder_hidden: int = knob(0, MODEL, non_negative, applies=_generative, later=True)
    # p(x|y,z)'s layers after the one where z and y meet
    decoder_net: str = knob("mlp", MODEL, applies=_generative, later=True)
    # after each hidden layer of the networks `regularised` names
    batch_norm: bool = knob(False, MODEL, later=True)
    dropout: float = knob(0.0, MODEL, fraction, later=True)  # (never q(z|x,y)'s x-y layer)
    # the networks batch_norm and dropout reach: any of classifier, encoder (its x part) and
    # decoder (its layers after the first; dropout only: under exact marginalisation its rows
    # are each image's K copies, whose batch statistics batch norm would mix)
    regularised: str = knob(
        "classifier,encoder", MODEL, applies=lambda v: v.batch_norm or v.dropout > 0, later=True
    )
    # what M2 models: the pixels, or M1+M2 (Kingma et al. 2014, section 3.1.3): the features
    # z1 ~ q(z1|x) of an M1 VAE trained first on the training images without labels
    features: Literal["pixels", "m1"] = knob("pixels", MODEL, later=True)
    # p(x|y,z): Bernoulli (pixels in [0, 1]), or Gaussian with a learned variance per dimension
    # (the decoder gives a mean and a log-variance; M1's features are real-valued)
    likelihood: Literal["bernoulli", "gaussian"] = knob(
        "bernoulli", MODEL, applies=_generative, later=True
    )
    # M1, trained once per these settings (and the dataset and validation split), then reused:
    # `m1_layers` hidden layers of `m1_hidden` softplus units, a Bernoulli likelihood of the
    # pixels binarised afresh in each batch, Adam; its stop rule on the validation ELBO (nats)
    m1_hidden: int = knob(500, M1, positive, applies=_on_m1, later=True)
    m1_layers: int = knob(2, M1, positive, applies=_on_m1, later=True)
    m1_z_dim: int = knob(50, M1, positive, applies=_on_m1, later=True)
    m1_lr: float = knob(1e-3, M1, positive, applies=_on_m1, later=True)
    m1_batch_size: int = knob(256, M1, positive, applies=_on_m1, later=True)
    m1_epochs: int = knob(500, M1, positive, applies=_on_m1, later=True)
    m1_patience: int = knob(10, M1, non_negative, applies=_on_m1, later=True)
    m1_min_delta: float = knob(
        0.1, M1, non_negative, applies=lambda v: _on_m1(v) and v.m1_patience > 0, later=True
    )
    m1_seed: int = knob(0, M1, knobs.seed, applies=_on_m1, later=True)
    # the pixels binarised afresh in every batch (the authors), or their grey levels as Bernoulli
    # targets (a faithful reimplementation); Adam's L2 term; gradient clipping by value (0: none)
    m1_binarize: bool = knob(True, M1, applies=_on_m1, later=True)
    m1_weight_decay: float = knob(0.0, M1, non_negative, applies=_on_m1, later=True)
    m1_clip: float = knob(0.0, M1, non_negative, applies=_on_m1, later=True)
    # M1's latent dimensions M2 reads: those whose posterior mean varies over the training
    # images with a standard deviation above this (0 keeps all), as the authors dropped the rest
    m1_min_std: float = knob(0.1, M1, non_negative, applies=_on_m1, later=True)
    # batch norm and dropout after each hidden layer of M1's encoder and decoder (its own
    # networks: `regularised` and M2's batch_norm and dropout do not reach them)
    m1_batch_norm: bool = knob(False, M1, applies=_on_m1, later=True)
    m1_dropout: float = knob(0.0, M1, fraction, applies=_on_m1, later=True)
    # optimisation
    optimizer: Literal["adam", "adamw"] = knob("adam", OPTIMISATION)
    lr: float = knob(1e-3, OPTIMISATION, positive)
    # Adam's L2 term: weight_decay * w added to each parameter's gradient (biases too), that of a
    # N(0, 1) prior on the weights divided by the training images when the loss is per row
    # (a faithful reimplementation of the authors' M2 uses 1 / n_total); adamw keeps torch's
    # decoupled 0.01
    weight_decay: float = knob(0.0, OPTIMISATION, non_negative, later=True)
    # dynamic binarisation: each step's training pixels drawn afresh as Bernoulli(x) (the
    # auxiliary models' authors); validation and test images stay grey (the model's mean)
    binarize: bool = knob(False, DATA, later=True)
    # the auxiliary families' classifier, q(y|a,x): at the mean of q(a|x) (0), or averaged
    # over this many draws of a (the authors: 100)
    eval_samples: int = knob(0, MODEL, non_negative, later=True)
    # a step schedule of the learning rate: lr * lr_decay ** (epochs done // lr_decay_every),
    # never below lr_min (0: no decay; the auxiliary models' authors: x0.75 every 200 epochs,
    # floor 3e-5); clipping before each update: the gradients' joint norm to clip_norm, then
    # each element to +-clip_value (0: none; the authors: 5, then 1)
    lr_decay: float = knob(1.0, OPTIMISATION, factor, later=True)
    lr_decay_every: int = knob(0, OPTIMISATION, non_negative, later=True)
    lr_min: float = knob(0.0, OPTIMISATION, non_negative, later=True)
    clip_norm: float = knob(0.0, OPTIMISATION, non_negative, later=True)
    clip_value: float = knob(0.0, OPTIMISATION, non_negative, later=True)
    # fixed: batch_size unlabelled + labelled_batch_size labelled rows every step; paper: Kingma
    # et al.'s batch composition; alternating: steps of labelled rows alone (the labelled images
    # once an epoch, in batches of labelled_batch_size) among steps of batch_size unlabelled rows
    # alone, one every total/labelled images (Pyro's SS-VAE: its one labelled batch at 100 labels)
    batch_rule: Literal["fixed", "paper", "alternating"] = knob("fixed", OPTIMISATION)
    # unlabelled rows per step
    batch_size: int = knob(128, OPTIMISATION, positive, applies=lambda v: v.batch_rule != "paper")
    # labelled rows per step (at most the label count)
    labelled_batch_size: int = knob(
        128, OPTIMISATION, positive, applies=lambda v: v.batch_rule != "paper"
    )
    epochs: int = knob(10, STOP, positive)  # the epoch budget: the most a run trains
    # the stop rule: end when the validation error has not improved on its best by more than
    # min_delta points for `patience` epochs (0: no early stop; needs validation images)
    patience: int = knob(0, STOP, non_negative)
    min_delta: float = knob(0.1, STOP, non_negative, applies=lambda v: v.patience > 0)
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            _check_choice(f, value)
            if isinstance(value, float) and not math.isfinite(value):
                raise VariantError(f"{f.name} must be a finite number, got {value!r}")
            said = knobs.complaint(f, value)
            if said:
                raise VariantError(said)
        self._check_optimisation()
        self._check_regularised()
        self._check_registered()
        self._check_family_reads()
        self._check_data()
        if self.features == "m1":
            self._check_m1()
        if self.patience and not self.validation:
            raise VariantError(
                "the stop rule (patience) needs validation images held out of training, "
                "e.g. validation=10000: the test set never decides when a run stops"
            )

    def _check_regularised(self) -> None:
        reach = self.regularised.split(",")
        unknown = sorted(set(reach) - set(REGULARISABLE))
        if unknown or len(set(reach)) != len(reach):
            raise VariantError(
                f"regularised names networks among {', '.join(REGULARISABLE)}, comma-separated "
                f"and each once; got {self.regularised!r}"
            )
        if self.batch_norm and "decoder" in reach:
            raise VariantError(
                "batch_norm in the decoder would mix each image's K copies (one per class) in "
                "its batch statistics: regularise the decoder with dropout alone"
            )

    def _check_optimisation(self) -> None:
        """The L2 term's optimiser and the learning-rate schedule."""
        if self.weight_decay and self.optimizer != "adam":
            raise VariantError(
                "weight_decay is Adam's L2 term; adamw decays its weights by torch's default "
                f"0.01: use optimizer=adam with weight_decay={self.weight_decay!r}"
            )
        if self.lr_min > self.lr:
            raise VariantError(f"lr_min {self.lr_min!r} is above lr {self.lr!r}")

    def _check_registered(self) -> None:
        """The family, the dataset and the networks are registered ones."""
        for key, names, kind, kinds in (
            ("family", FAMILIES, "family", "families"),
            ("dataset", DATASETS, "dataset", "datasets"),
            ("classifier_net", NETWORKS, "network", "networks"),
            ("encoder_net", NETWORKS, "network", "networks"),
            ("decoder_net", NETWORKS, "network", "networks"),
        ):
            if getattr(self, key) not in names:
                hint = difflib.get_close_matches(getattr(self, key), names, n=1)
                raise VariantError(
                    f"{key} {getattr(self, key)!r} is not a registered {kind}"
                    + (f" (did you mean {hint[0]!r}?)" if hint else "")
                    + f"; {kinds}: {', '.join(names)}"
                )

    def _check_family_reads(self) -> None:
        """No setting the family does not read is set away from its default."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        unread = sorted(UNREAD.get(self.family, frozenset()))
        moved = [f"{k}={getattr(self, k)!r}" for k in unread if getattr(self, k) != defaults[k]]
        if moved:
            raise VariantError(
                f"family {self.family!r} does not read {', '.join(moved)}; leave "
                f"{'it' if len(moved) == 1 else 'them'} at the default (`m2h show NAME` lists "
                f"the settings a variant of that family reads)"
            )

    def _check_data(self) -> None:
        """The labelled subset's seed, the batch rule and the binarised pixels."""
        if self.binarize and (self.features == "m1" or self.likelihood != "bernoulli"):
            raise VariantError(
                "binarize draws binary pixels: it needs pixels and a Bernoulli likelihood"
            )
        if self.batch_rule == "alternating" and self.estimator == "supervised":
            raise VariantError(
                "batch_rule=alternating gives steps of unlabelled images alone, where the "
                "supervised-only control has nothing to learn: use batch_rule=fixed"
            )

    def _check_m1(self) -> None:
        if self.likelihood != "gaussian":
            raise VariantError(
                "features=m1 gives M2 real-valued features, which a Bernoulli cannot model: "
                "set likelihood=gaussian"
            )
        images = [k for k in ("classifier_net", "encoder_net") if getattr(self, k) == "cnn"]
        if images:
            raise VariantError(
                f"{images[0]}=cnn reads 28x28 images; with features=m1 the networks read M1's "
                "features: use mlp"
            )
        if self.m1_patience and not self.validation:
            raise VariantError(
                "M1's stop rule (m1_patience) needs validation images held out of training, "
                "e.g. validation=10000, or m1_patience=0 to train M1 for m1_epochs"
            )

    @property
    def label_draw(self) -> int:
        """The seed that draws the labelled subset: label_seed, else the run's seed."""
        return self.seed if self.label_seed is None else self.label_seed

    def replace(self, **changes: Any) -> Variant:
        return dataclasses.replace(self, **changes)

    def params(self) -> dict[str, Any]:
        """Every knob as a flat, stably named mapping (the description left out)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "description"}


# the settings of a part, in their order: the stop rule (it decides when training ends, not
# what it does) and M1+M2's M1 and its features (config/m1.py reads them)
STOP_SETTINGS = tuple(f.name for f in fields(Variant) if knobs.part_of(f) == STOP)
M1_SETTINGS = tuple(f.name for f in fields(Variant) if knobs.part_of(f) == M1)
# the settings added after checkpoints began (the networks, M1+M2, weight decay, the label
# seed, the family, ...): left out of a checkpoint's and a record's settings at their defaults,
# so one written before them still resumes and reads alike
LATER_SETTINGS = tuple(f.name for f in fields(Variant) if knobs.is_later(f))


def round_float(value: Any, digits: int = 4) -> Any:
    """A float to `digits` significant digits (what a person reads and a search resolves);
    anything else as it is."""
    return float(f"{value:.{digits}g}") if isinstance(value, float) else value


def applicable_params(variant: Variant) -> dict[str, Any]:
    """The settings that change what `variant` does (a temperature means nothing to exact
    marginalisation, an annealing rate nothing to a fixed temperature, a classifier's layers
    nothing to the ADGM, whose classifier is its own): each knob's `applies`, less what the
    variant's family does not read."""
    unread = UNREAD.get(variant.family, frozenset())
    return {
        f.name: getattr(variant, f.name)
        for f in fields(variant)
        if f.name != "description" and f.name not in unread and knobs.applies_to(f, variant)
    }


def settings_by_part(settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`settings` (some of a variant's) grouped by their part, the shared ones first
    (knobs.SHARED_PARTS, then knobs.FAMILY_PARTS); those of no part (the name) left out."""
    parts = {f.name: knobs.part_of(f) for f in fields(Variant)}
    return {
        part: {k: v for k, v in settings.items() if parts.get(k) == part}
        for part in (*SHARED_PARTS, *FAMILY_PARTS)
        if any(parts.get(k) == part for k in settings)
    }


def _without_later_defaults(params: dict[str, Any]) -> dict[str, Any]:
    """`params` less the LATER_SETTINGS that are at their defaults."""
    defaults = _later_defaults()
    return {k: v for k, v in params.items() if not (k in defaults and v == defaults[k])}


def recorded_params(variant: Variant) -> dict[str, Any]:
    """The settings a run record stores: all but LATER_SETTINGS at their defaults (a record
    read back gets them), so records before and after those settings read alike."""
    return _without_later_defaults(variant.params())


def resumable_settings(params: dict[str, Any]) -> dict[str, Any]:
    """The settings a checkpoint must share to be continued: all but the epoch budget and the
    stop rule (they decide when training ends, not what it does), so a longer run, or one with
    more patience, can resume a shorter one; LATER_SETTINGS only where not at their default."""
    return {k: v for k, v in _without_later_defaults(params).items() if k not in STOP_SETTINGS}


@functools.cache
def _later_defaults() -> dict[str, Any]:
    return {f.name: f.default for f in fields(Variant) if f.name in LATER_SETTINGS}


@functools.cache
def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(Variant)


def _check_choice(f: dataclasses.Field, value: Any) -> None:
    kind = _field_types()[f.name]
    if typing.get_origin(kind) is Literal and value not in typing.get_args(kind):
        choices = ", ".join(map(str, typing.get_args(kind)))
        raise VariantError(f"{f.name} must be one of {choices}; got {value!r}")


def parse_value(key: str, text: str) -> Any:
    """Parse `text` to the type of Variant field `key`."""
    kinds = _field_types()
    if key not in kinds or key in ("name", "description"):
        known = [k for k in kinds if k not in ("name", "description")]
        hint = difflib.get_close_matches(key, known, n=1)
        raise VariantError(
            f"unknown setting {key!r}"
            + (f" (did you mean {hint[0]!r}?)" if hint else "")
            + f"; settings: {', '.join(known)}"
        )
    kind = kinds[key]
    if kind == int | None:  # an optional seed: "none" is its default
        return None if text.lower() == "none" else parse_value_as(key, int, text)
    if typing.get_origin(kind) is Literal or kind is str:
        return text
    if kind is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise VariantError(f"{key} must be true or false, got {text!r}")
    if kind in (int, float):
        return parse_value_as(key, kind, text)
    raise VariantError(f"cannot set {key} of type {kind}")  # pragma: no cover


def parse_value_as(key: str, kind: type, text: str) -> Any:
    """`text` as an int or a float, or a VariantError naming `key`."""
    try:
        return kind(text)
    except ValueError:
        raise VariantError(f"{key} must be {kind.__name__}, got {text!r}") from None


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """`["temperature=0.5", "labels=600"]` -> typed overrides."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep:
            raise VariantError(f"an override is key=value, got {pair!r}")
        if key.strip() in overrides:
            raise VariantError(
                f"{key.strip()} is set twice ({key.strip()}={overrides[key.strip()]} and {pair}): "
                "one run takes one value of each setting"
            )
        overrides[key.strip()] = parse_value(key.strip(), text.strip())
    return overrides


_REGISTRY: dict[str, Variant] = {}
_SPACES: dict[str, dict[str, Any]] = {}
BUILT_IN_MODULE = "harness.config.zoo"  # its variants are the built-in ones
_BUILT_IN: set[str] = set()
USER_VARIANTS_ENV = "M2H_VARIANTS"


def _check_variant_name(name: str) -> None:
    """A variant's name names its records and checkpoints: refused, as a VariantError (which
    the variants files' loaders say with their file), unless it can name a file."""
    try:
        check_name(name, "variant")
    except InvalidNameError as err:
        raise VariantError(str(err)) from None


def register_variant(
    fn_or_name: Callable[[], Variant] | str | None = None,
    variant: Variant | None = None,
    *,
    space: dict[str, Any] | None = None,
    replace: bool = False,
) -> Any:
    """Register a variant: `@register_variant`, `@register_variant(space=...)` on a factory
    function, or `register_variant(name, variant, space=...)`. `space` is what a search tunes.
    Without `space`, a variant made from another (`get_variant("exact").replace(...)`, or a TOML
    file's `base`) searches its base's space. The name must be able to name a file
    (`config/names.py`); a built-in variant (the zoo's) is redefined only with `replace=True`, so
    a variants file never changes one by accident."""
    if fn_or_name is None:
        return lambda fn: register_variant(fn, space=space, replace=replace)
    if isinstance(fn_or_name, str):
        if variant is None:
            raise TypeError("register_variant(name, variant) needs a variant")
        base, name, registered = variant.name, fn_or_name, variant.replace(name=fn_or_name)
    else:
        name = fn_or_name.__name__.replace("_", "-")
        doc = " ".join((fn_or_name.__doc__ or "").split())
        built = fn_or_name()
        base, registered = built.name, built.replace(name=name, description=doc)
    _check_variant_name(name)
    module = getattr(fn_or_name, "__module__", None)
    if name in _BUILT_IN and not replace and module != BUILT_IN_MODULE:
        raise VariantError(
            f"variant {name!r} is built in; to redefine it, say so: `replace = true` in its "
            f"TOML table, or register_variant(..., replace=True); else give yours a new name"
        )
    if module == BUILT_IN_MODULE:
        _BUILT_IN.add(name)
    _REGISTRY[name] = registered
    # a variant made from another (get_variant(BASE).replace(...), a TOML base) searches its
    # base's space unless it declares its own
    _SPACES[name] = dict(space if space is not None else _SPACES.get(base, {}))
    return fn_or_name if not isinstance(fn_or_name, str) else registered


def user_variants_path() -> Path:
    """The user's variants file (`--variants FILE` sets $M2H_VARIANTS, which worker processes
    inherit), else ./m2h-variants.toml (exports go to their own file: `exports_path`)."""
    return Path(os.environ.get(USER_VARIANTS_ENV) or "m2h-variants.toml")


_LOADED: set[Path] = set()
_SOURCES: dict[str, Path] = {}  # the file each user variant was registered from
# what a variant's table in a TOML variants file may hold (`tuned`: where an export was tuned;
# `variants`: the file its base comes from, loaded first)
TOML_KEYS = {"base", "description", "set", "replace", "tuned", "variants"}


def load_user_variants(path: Path, lenient: bool = False) -> list[str]:
    """Register the user's variants (and networks) from `path`, once per process: a Python
    module (`@register_variant`, `@register_network`: it runs as imported) or a TOML file whose
    `[name]` tables give `base`, `description`, a `[name.set]` table and, where the base is
    another file's variant, that file (`variants`, loaded first). A missing file is no error
    (`--variants` checks the file it names exists); a broken one is one line naming the file
    and the line, or with `lenient` (the exports file m2h writes) a warning returned for each
    entry it skips, so one stale export never stops an unrelated command."""
    path = path.resolve()
    if path in _LOADED or not path.exists():  # no file yet: exports may create it
        return []
    _LOADED.add(path)
    if path.suffix == ".py":
        before = set(_REGISTRY)
        _run_module(path)
        _SOURCES.update(dict.fromkeys(set(_REGISTRY) - before, path))
        return []
    try:
        spec = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        if lenient:
            return [f"{path} is not valid TOML ({err}); none of its variants is loaded"]
        raise VariantError(f"{path} is not valid TOML: {err}") from None
    skipped = []
    for name, entry in spec.items():
        try:
            _register_entry(name, entry)
            _SOURCES[name] = path
        except (VariantError, TypeError, AttributeError) as err:
            if not lenient:
                raise VariantError(f"{path}: variant [{name}]: {err}") from None
            skipped.append(f"{path}: variant [{name}] not loaded: {err}")
    return skipped


def _register_entry(name: str, entry: Any) -> None:
    """Register one `[name]` table of a TOML variants file."""
    if not isinstance(entry, dict):
        raise VariantError(f"must be a table ([{name}] with base = ...), not a value")
    strays = set(entry) - TOML_KEYS
    if strays:
        known = ", ".join(sorted(TOML_KEYS))
        raise VariantError(f"unknown key {', '.join(sorted(strays))} (known: {known})")
    if "base" not in entry:
        raise VariantError('names no base (base = "VARIANT")')
    if "variants" in entry:
        source = Path(str(entry["variants"]))
        if not source.is_file():
            raise VariantError(f"its base {entry['base']!r} is from {source}, which is gone")
        load_user_variants(source)
    variant = create_variant(entry["base"], entry.get("set", {}))
    register_variant(
        name,
        variant.replace(description=str(entry.get("description", ""))),
        space=_SPACES.get(variant.name),
        replace=entry.get("replace") is True,
    )


def _run_module(path: Path) -> None:
    """Import the user's module; an error in it names its file and line."""
    import importlib.util
    import sys
    import traceback

    spec = importlib.util.spec_from_file_location(f"m2h_user_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pickled variants and networks find their module again
    try:
        spec.loader.exec_module(module)
    except SyntaxError as err:
        raise VariantError(f"{path}:{err.lineno}: {err.msg}") from None
    except Exception as err:
        frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename == str(path)]
        line = f":{frames[-1].lineno}" if frames else ""
        raise VariantError(f"{path}{line}: {type(err).__name__}: {err}") from None


EXPORTS_ENV = "M2H_EXPORTS"
EXPORTS_HEADER = (
    "# Variants exported by `m2h search --export`, each with the study and budget it was tuned\n"
    "# at ([NAME.tuned]). m2h rewrites this file: keep your own variants in your --variants file.\n"
)


def exports_path() -> Path:
    """Where `m2h search --export` writes: $M2H_EXPORTS, else ./m2h-exports.toml, a file of
    its own (never the user's variants file, whose comments and code it would not keep)."""
    return Path(os.environ.get(EXPORTS_ENV) or "m2h-exports.toml")


def load_configured_variants() -> list[str]:
    """What every command and worker loads: the exports and the user's variants file, either of
    which may build on the other's variants (an export names the file its base came from); the
    warnings for exports that could not be loaded, which are skipped."""
    exports = exports_path()
    skipped = load_user_variants(exports, lenient=True)  # the user's file may build on an export
    load_user_variants(user_variants_path())
    if not skipped:
        return []
    _LOADED.discard(exports.resolve())  # read again what may build on the user's file
    return load_user_variants(exports, lenient=True)


def check_export_name(name: str) -> str:
    """`name` when an export may take it (it can name a file and no built-in variant has it);
    checked before a search trains anything."""
    _check_variant_name(name)
    if name in _BUILT_IN:
        raise VariantError(f"variant {name!r} is built in; export the trial under a new name")
    return name


def save_user_variant(
    name: str,
    base: str,
    settings: dict[str, Any],
    description: str,
    tuned: dict[str, Any],
    path: Path | None = None,
) -> Path:
    """Add (or replace) `name` in the exports file, with where it was `tuned` (study, budget),
    and register it."""
    check_export_name(name)
    path = path or exports_path()
    spec = tomllib.loads(path.read_text()) if path.exists() else {}
    spec[name] = {"base": base, "description": description, "set": settings, "tuned": tuned}
    if base in _SOURCES:  # a variant of the user's file: the export says which file
        spec[name]["variants"] = str(_SOURCES[base])
    lines = [EXPORTS_HEADER]
    for key, entry in spec.items():
        lines += [
            f"[{json.dumps(key)}]",
            f"base = {json.dumps(entry['base'])}",
            *([f"variants = {json.dumps(entry['variants'])}"] if "variants" in entry else []),
            f"description = {json.dumps(entry['description'])}",
        ]
        for table in ("set", "tuned"):
            lines += ["", f"[{json.dumps(key)}.{table}]"]
            lines += [f"{k} = {json.dumps(v)}" for k, v in entry.get(table, {}).items()]
        lines.append("")
    write_atomically(path, lambda tmp: tmp.write_text("\n".join(lines)))
    _LOADED.discard(path.resolve())
    load_user_variants(path)
    return path


def search_space(name: str) -> dict[str, Any]:
    get_variant(name)
    return dict(_SPACES.get(name, {}))


def list_variants() -> list[Variant]:
    """The registered variants: the built-in ones (harness.config.zoo, registered when the
    package is imported) and any user variants loaded (`load_user_variants`)."""
    return list(_REGISTRY.values())


def get_variant(name: str) -> Variant:
    if name not in _REGISTRY:
        hint = difflib.get_close_matches(name, _REGISTRY, n=1)
        raise VariantError(
            f"unknown variant {name!r}"
            + (f" (did you mean {hint[0]!r}?)" if hint else "")
            + f"; known: {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[name]


def create_variant(name: str, overrides: dict[str, Any] | None = None) -> Variant:
    """Fetch a registered variant and apply overrides, each parsed to its field's type (text or
    values alike, so 256.0 for an int field is an error, not a float) and validated."""
    typed = {key: parse_value(key, str(value)) for key, value in (overrides or {}).items()}
    return get_variant(name).replace(**typed)


__all__ = [
    "NUM_CLASSES",
    "Variant",
    "VariantError",
    "create_variant",
    "get_variant",
    "list_variants",
    "parse_overrides",
    "register_variant",
]
