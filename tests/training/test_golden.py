"""The pinned golden runs (harness/tools/golden.py): on a machine kind with pins, every estimator
and loop gives its pinned losses, accuracies and predictions to the last bit; a change that moves
them is a numerics change, made on purpose (bump NUMERICS_VERSION, write the pins again)."""

from __future__ import annotations

import pytest

from harness.tools.golden import CASES, golden_run, numerics_key, read_pins
from harness.training.numerics import NUMERICS_VERSION

PINS = read_pins()


def test_the_pins_are_of_this_numerics_version_and_every_case():
    assert PINS["numerics_version"] == NUMERICS_VERSION, (
        "tests/golden_runs.json was written under another numerics version: write it again "
        "(python -m harness.tools.golden --write) on each machine kind it pins"
    )
    assert PINS["pins"], "no machine kind is pinned"
    for runs in PINS["pins"].values():
        assert set(runs) == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_golden_run_gives_its_pinned_numbers(name):
    pinned = PINS["pins"].get(numerics_key())
    if pinned is None:
        pytest.skip(
            f"no golden runs pinned for {numerics_key()} (pinned: {', '.join(PINS['pins'])})"
        )
    ours = golden_run(name)
    for epoch, (mine, theirs) in enumerate(
        zip(ours["epochs"], pinned[name]["epochs"], strict=True)
    ):
        moved = {
            k: (float.fromhex(mine[k]), float.fromhex(v)) for k, v in theirs.items() if mine[k] != v
        }
        assert not moved, f"{name} epoch {epoch + 1} moved: {moved}: a numerics change"
    assert ours["predictions"] == pinned[name]["predictions"]


def test_the_records_name_the_numerics_they_ran_under():
    import torch

    from harness.runs.provenance import environment_params

    params = environment_params(torch.device("cpu"))
    assert params["numerics_version"] == NUMERICS_VERSION
    assert params["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert numerics_key().startswith(f"{params['cpu_capability']}/{params['cpu_vendor']}/")
