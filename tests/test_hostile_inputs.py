"""Issue 54's findings replayed: a name never escapes its folder, a built-in variant is never
redefined by accident, a failing write leaves the earlier outputs as they were, and each bad
input ends in one line naming the file or setting, with nothing written."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from harness.cli.main import main
from harness.config.names import InvalidNameError, check_name
from harness.config.variants import VariantError, get_variant, load_user_variants
from harness.files import OutputError, inside, write_all_atomically
from harness.reporting.plots import plot
from harness.training.checkpoint import load_checkpoint, save_checkpoint
from tests.reporting.test_results import labels_runs
from tests.training.test_checkpoint import plain_state

HOSTILE = [
    "../../../escaped",
    "/tmp/absolute",
    "a/b",
    "a\\b",
    "..",
    ".hidden",
    "",
    "a b",
    "x" * 101,
]


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")}


def one_line_error(capsys, argv: list[str]) -> str:
    """Run m2h; it must fail with exactly one line on stderr, which is returned."""
    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err, err
    return err


@pytest.mark.parametrize("name", HOSTILE)
def test_a_name_that_cannot_name_a_file_is_refused(name):
    with pytest.raises(InvalidNameError, match="cannot name a file"):
        check_name(name, "variant")


@pytest.mark.parametrize("name", ["exact", "gumbel-0.5", "m1m2-reimpl", "my_variant+x", "A1"])
def test_the_names_the_harness_uses_are_accepted(name):
    assert check_name(name, "variant") == name


@pytest.mark.parametrize("name", ["../../../escaped", "/tmp/absolute-m2h-name", "sub/folder"])
def test_a_variants_file_naming_a_path_writes_nothing_anywhere(tmp_path, monkeypatch, capsys, name):
    root = tmp_path / "a" / "b" / "c"
    root.mkdir(parents=True)
    monkeypatch.chdir(root)
    (root / "m2h-variants.toml").write_text(f'["{name}"]\nbase = "exact"\n')
    before = files_under(tmp_path)
    err = one_line_error(capsys, ["run", name, "--epochs", "1", "--no-track"])
    assert "m2h-variants.toml" in err and "cannot name a file" in err
    assert files_under(tmp_path) == before
    assert not Path("/tmp/absolute-m2h-name-b9743a7741ce-s0.json").exists()


def test_sweep_study_and_export_names_are_refused_before_anything_is_written(
    tmp_path, capsys, monkeypatch
):
    root = tmp_path / "a" / "b"
    root.mkdir(parents=True)
    monkeypatch.chdir(root)
    before = files_under(tmp_path)
    for argv, what in [
        (["ablate", "../../x", "--base", "exact", "--sweep", "alpha=0.1,1"], "ablation name"),
        (["search", "exact", "--study", "../../s", "--trials", "1", "--no-track"], "study name"),
        (["search", "exact", "--trials", "1", "--export", "../e", "--no-track"], "variant name"),
        (["search", "exact", "--trials", "1", "--export", "exact", "--no-track"], "built in"),
    ]:
        assert what in one_line_error(capsys, argv)
    assert files_under(tmp_path) == before


def test_inside_refuses_any_path_that_leaves_its_folder(tmp_path):
    assert inside(tmp_path, "exact-abc-s0.json") == tmp_path / "exact-abc-s0.json"
    for name in ("../x.json", "/etc/x.json", "a/b.json", ".."):
        with pytest.raises(OutputError, match="outside"):
            inside(tmp_path, name)


def test_a_built_in_variant_is_redefined_only_when_the_file_says_so(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('[exact]\nbase = "gumbel-0.5"\n')
    with pytest.raises(VariantError, match=r"mine\.toml: variant \[exact\]: .*is built in"):
        load_user_variants(path)
    assert get_variant("exact").estimator == "exact"  # unchanged
    path = tmp_path / "meant.toml"
    path.write_text('[exact]\nbase = "gumbel-0.5"\nreplace = true\n')
    load_user_variants(path)
    assert get_variant("exact").estimator == "gumbel"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[mine]\nbse = "exact"\n', "unknown key bse"),
        ("mine = 3\n", "must be a table"),
        ('[mine]\ndescription = "no base"\n', "names no base"),
    ],
)
def test_a_variants_file_with_a_mistake_is_one_line_naming_it(tmp_path, text, message):
    path = tmp_path / "mine.toml"
    path.write_text(text)
    with pytest.raises(VariantError) as err:
        load_user_variants(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_a_failing_write_of_a_set_leaves_every_earlier_file(tmp_path):
    first, second = tmp_path / "t.csv", tmp_path / "t.md"
    first.write_text("old csv")
    second.write_text("old md")

    def full(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        write_all_atomically({first: lambda tmp: tmp.write_text("new csv"), second: full})
    assert (first.read_text(), second.read_text()) == ("old csv", "old md")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv", "t.md"]  # no temporaries


def test_plots_that_fail_on_a_full_disk_leave_the_earlier_pngs(tmp_path, monkeypatch):
    ablation, runs, curves = labels_runs(tmp_path, [30.0, 20.0])
    written = plot(ablation.name, runs, curves, tmp_path, "labels")
    earlier = {p: p.read_bytes() for p in written}
    saves = []

    def save_then_fill(figure, path, **kwargs):
        saves.append(path)
        if len(saves) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        path.write_bytes(b"new")

    monkeypatch.setattr("matplotlib.figure.Figure.savefig", save_then_fill)
    with pytest.raises(OSError):
        plot(ablation.name, runs, curves, tmp_path, "labels")
    assert {p: p.read_bytes() for p in written} == earlier
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_checkpoint_that_cannot_be_written_is_one_line_and_keeps_the_last(tmp_path, monkeypatch):
    path = tmp_path / "run.pt"
    save_checkpoint(path, plain_state(epoch=1))

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64")

    monkeypatch.setattr("torch.save", full)
    monkeypatch.setattr("shutil.disk_usage", lambda p: type("U", (), {"free": 0})())
    with pytest.raises(OutputError) as err:
        save_checkpoint(path, plain_state(epoch=2))
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    assert "disk is full" in str(err.value) and "inline_container" not in str(err.value)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "exact", "--set", "alpha=nan", "--no-track"], "alpha must be a finite number"),
        (["run", "exact", "--set", "lr=inf", "--no-track"], "lr must be a finite number"),
        (["run", "exact", "--seed", str(10**30), "--no-track"], "seed must be at most"),
        (["compare", "labels:exact[labels=100]", "labels:exact[labels=100]"], "one cell"),
    ],
)
def test_bad_inputs_are_one_line_naming_the_setting_and_make_no_folder(
    tmp_path, monkeypatch, capsys, argv, message
):
    monkeypatch.chdir(tmp_path)
    assert message in one_line_error(capsys, argv)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("device", "message"), [("tpu", "'tpu' is no device m2h trains on"), ("cuda:99", "cuda:99")]
)
def test_a_device_not_there_is_refused_while_the_flags_are_read(
    tmp_path, monkeypatch, capsys, device, message
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        main(["run", "exact", "--device", device, "--no-track"])
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
