from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import pytest

from harness.cli.main import main


def m2h(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """`m2h ARGS` in a fresh temporary folder (a run leaves its checkpoint and store there, never
    in the repository)."""
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        capture_output=True,
        text=True,
        cwd=tempfile.mkdtemp(prefix="m2h-test-"),
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


NOTE = "m2h: each run takes"  # the threads note, printed where the machine is busy


def next_line(proc: subprocess.Popen) -> str:
    """The next line a running m2h prints, past the threads note."""
    line = proc.stdout.readline()
    return next_line(proc) if line.startswith(NOTE) else line


def test_list_shows_every_variant_with_its_knobs(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header[:4] == ["name", "family", "estimator", "y_term"] and "temperature" in header
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[1:]}
    assert (rows["exact"], rows["adgm"], rows["sdgm"]) == ("m2", "adgm", "sdgm")
    for name in [
        "tutorial-gumbel",
        "paper-exact",
        "exact",
        "gumbel-0.5",
        "gumbel-anneal",
        "gumbel-st",
        "supervised-only",
    ]:
        assert any(line.split()[0] == name for line in out.splitlines()[1:]), name


def test_show_prints_every_setting(capsys):
    assert main(["show", "paper-exact"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("paper-exact: Kingma et al. 2014")
    assert any(line.split() == ["activation", "softplus"] for line in out.splitlines())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "exat"], "unknown variant 'exat' (did you mean 'exact'?)"),
        (["run", "exact", "--set", "temperature=0"], "temperature must be > 0"),
        (["run", "exact", "--set", "bogus=1"], "unknown setting 'bogus'"),
        (["run", "exact", "--labels", "55"], "positive multiple of the 10 classes"),
        (["run", "exact", "--labels", "60000"], "but the training split holds 5923"),
        (["search", "exact", "--trials", "-1"], "--trials must be >= 1, got -1"),
        (["run", "exact", "--threads", "0"], "--threads must be >= 1, got 0"),
        (
            ["ablate", "labels", "--cells", "exakt[labels=100]", "--no-track"],
            "is no cell of ablation 'labels' (did you mean 'exact[labels=100]'?)",
        ),
        (
            ["run", "exact", "--data-root", "/nonexistent/m2", "--no-download"],
            "the data root /nonexistent/m2 does not exist",
        ),
    ],
)
def test_bad_input_is_one_clear_line_and_a_failure(capsys, args, message):
    assert main(args) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_core_runs_without_mlflow_or_optuna(tmp_path):
    code = (
        "import sys; sys.modules['mlflow'] = None; sys.modules['optuna'] = None\n"
        "from harness.cli.main import main\n"
        "raise SystemExit(main(['run', 'exact', '--epochs', '1', '--max-steps', '2',"
        " '--no-track']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "exact on mnist, 100 labels, seed 0: test accuracy" in done.stdout


@pytest.mark.e2e
def test_one_epoch_run_on_real_mnist_with_100_labels():
    """One real epoch of `exact` (468 steps) from the command line: at least 75% test accuracy."""
    done = m2h("run", "exact", "--labels", "100", "--epochs", "1", "--no-track")
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.strip().splitlines() if not line.startswith(NOTE)]
    assert lines[0].startswith("starting fresh: no checkpoint of these settings")
    assert lines[1].startswith("epoch   1/1") and "rows/s" in lines[1]
    summary = next(line for line in lines if "test accuracy " in line)
    accuracy = float(summary.split("test accuracy ")[1].split("%")[0])
    assert accuracy >= 75.0, summary
    assert lines[-1].startswith("record: ") and lines[-1].endswith("-s0.json")  # issue 29


def _final_figures(stdout: str) -> tuple[str, str]:
    """The last epoch's losses and the summary's accuracy, without the timings."""
    epoch_line = [line for line in stdout.splitlines() if line.startswith("epoch")][-1]
    summary = [line for line in stdout.splitlines() if "test accuracy" in line][-1]
    return epoch_line.split("test acc")[0].split("/", 1)[1], summary.split(";")[0]


@pytest.mark.e2e
def test_sigterm_mid_epoch_then_resume_ends_with_the_uninterrupted_numbers(tmp_path):
    import signal

    mlflow = pytest.importorskip("mlflow")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    budget = ["run", "exact", "--epochs", "3", "--max-steps", "40"]
    args = [
        *budget,
        "--tracking-uri",
        store,
        "--checkpoint-dir",
        str(tmp_path / "ckpt"),
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert next_line(proc).startswith("starting fresh")
    assert next_line(proc).startswith("epoch   1/3")
    time.sleep(0.3)  # into the second epoch
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "--resume" in err and len(err.strip().splitlines()) == 1, err
    client = mlflow.MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("runs").experiment_id])
    assert run.info.status == "KILLED"

    resumed = m2h(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert not resumed.stdout.startswith("epoch   1/3")  # epoch 1 came from the checkpoint
    straight = m2h(
        *budget,
        "--no-track",
        "--checkpoint-dir",
        str(tmp_path / "other"),
    )
    assert _final_figures(resumed.stdout) == _final_figures(straight.stdout)
    (run,) = client.search_runs([client.get_experiment_by_name("runs").experiment_id])
    assert run.info.status == "FINISHED"
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "test_error"))
    assert steps == [1, 2, 3]


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["run", "exact"], "with --resume"),
        (["ablate", "temperature"], "run the same command to continue (finished runs"),
        (["search", "exact"], "run the same command to continue (the trial is retried"),
        (["table", "temperature"], None),
    ],
)
def test_an_interrupt_says_how_that_command_continues(args, hint, capsys, monkeypatch):
    """`ablate` and `search` resume by themselves; only `run` needs --resume, which the
    others do not accept; a command that trains nothing has no checkpoint to point to."""
    import importlib

    module = {"table": "results"}.get(args[0], args[0])  # the module the subcommand is in
    cli = importlib.import_module(f"harness.cli.{module}")

    def interrupted(_args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, f"cmd_{args[0]}", interrupted)
    assert main(args) == 130
    err = capsys.readouterr().err.strip()
    if hint is None:
        assert err == "m2h: interrupted"
    else:
        assert err.startswith("m2h: interrupted;") and hint in err, err


def test_unwritable_folders_are_clear_errors_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["run", "exact", "--no-track", "--checkpoint-dir", str(blocker / "ckpt")]) == 1
    assert "the checkpoint folder" in capsys.readouterr().err
    assert (
        main(
            [
                "table",
                "estimator",
                "--out",
                str(blocker / "results"),
            ]
        )
        == 1
    )
    assert "the results folder" in capsys.readouterr().err


def test_missing_data_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "none").mkdir()
    assert main(["run", "exact", "--data-root", str(tmp_path / "none"), "--no-download"]) == 1
    assert "could not be downloaded" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["none"]  # no store, no checkpoint folder
    assert list((tmp_path / "none").iterdir()) == []


def test_debug_shows_the_traceback(capsys):
    with pytest.raises(Exception, match="unknown variant"):
        main(["--debug", "run", "nope"])


@pytest.mark.e2e
def test_ui_serves_the_store_on_localhost_and_prints_its_address(tmp_path):
    import urllib.request

    from harness.tracking.server import free_port

    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness",
            "ui",
            "--port",
            str(port),
            "--tracking-uri",
            f"sqlite:///{tmp_path / 'ui.db'}",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=False,
    )
    try:
        first = proc.stdout.readline().decode()
        assert f"at http://127.0.0.1:{port}: starting" in first and "ui.db" in first
        ready = proc.stdout.readline().decode()  # said once the server answers, not before
        assert ready.startswith(f"ready: open http://127.0.0.1:{port}"), ready
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as page:
            assert page.status == 200 and b"MLflow" in page.read()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    with pytest.raises(OSError):  # stopping m2h ui stopped the whole server
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)


@pytest.mark.e2e
def test_the_tutorial_variant_reproduces_the_pixyz_tutorial():
    """The tutorial reports about 76-84% test accuracy over its first 10 epochs at 100 labels."""
    done = m2h(
        "run",
        "tutorial-gumbel",
        "--epochs",
        "3",
        "--no-track",
    )
    assert done.returncode == 0, done.stderr
    accuracies = [
        float(line.split("test acc ")[1].split("%")[0])
        for line in done.stdout.splitlines()
        if line.startswith("epoch")
    ]
    assert len(accuracies) == 3
    assert all(74.0 <= a <= 84.0 for a in accuracies), accuracies
    assert accuracies[-1] >= 76.0, accuracies


def test_a_run_says_whether_it_resumes_and_from_what(capsys, mnist):
    quick = ["run", "exact", "--no-track", "--max-steps", "2"]
    assert main([*quick, "--epochs", "1"]) == 0
    assert "starting fresh: no checkpoint of these settings" in capsys.readouterr().out
    other_budget = ["run", "exact", "--no-track", "--max-steps", "3", "--epochs", "2"]
    assert main([*other_budget, "--resume"]) == 0
    out = capsys.readouterr().out
    assert "starting fresh: no checkpoint of these settings" in out
    assert "not resumed, being of other settings" in out and "differs in --max-steps" in out
    assert main([*quick, "--epochs", "2", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "resuming from checkpoints/runs/exact-" in out and "after epoch 1 of 2" in out
    assert "epoch   1/2" not in out and "epoch   2/2" in out  # only the missing epoch trained
    assert main([*quick, "--epochs", "2", "--set", "lr=3e-4", "--resume"]) == 0
    assert "differs in lr" in capsys.readouterr().out  # never continued: other settings
    assert main([*quick, "--epochs", "2"]) == 1  # finished: its record is there
    err = capsys.readouterr().err
    assert err.startswith("m2h: error: seed 0 of this run has finished (its record is results")
    assert err.count("\n") == 1 and "pass --again to train it anew" in err
    assert main([*quick, "--epochs", "2", "--again"]) == 0
    assert "will be overwritten (--resume continues it)" in capsys.readouterr().out


def test_a_relative_data_root_means_the_same_folder_in_every_child_process(
    monkeypatch, tmp_path, data_root
):
    (tmp_path / "here").mkdir()
    (tmp_path / "here" / "data").symlink_to(data_root)
    monkeypatch.chdir(tmp_path / "here")
    monkeypatch.setenv("M2_DATA_ROOT", "data")
    assert main(["list"]) == 0
    assert os.environ["M2_DATA_ROOT"] == str(tmp_path / "here" / "data")  # children inherit it


def test_show_leaves_out_the_settings_that_do_not_apply(capsys):
    assert main(["show", "exact"]) == 0
    shown = {line.split()[0] for line in capsys.readouterr().out.splitlines() if line[:2] == "  "}
    assert "temperature" not in shown and "anneal_rate" not in shown and "lr" in shown
    assert main(["show", "gumbel-anneal"]) == 0
    shown = {line.split()[0] for line in capsys.readouterr().out.splitlines() if line[:2] == "  "}
    assert {"temperature", "anneal_rate", "temperature_min"} <= shown
    assert main(["show", "exact", "--all"]) == 0
    assert "temperature" in capsys.readouterr().out


def test_show_into_a_closed_pipe_is_not_an_error():
    done = subprocess.run(
        f"{sys.executable} -m harness show paper-exact | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.startswith("paper-exact:")


def test_listing_variants_imports_neither_torch_nor_mlflow():
    code = (
        "import sys\nfrom harness.cli.main import main\nmain(['list']); main(['show', 'exact'])\n"
        "print(sorted(m for m in ('torch', 'mlflow', 'optuna', 'pandas') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_list_rounds_its_floats(capsys):
    from harness.config.variants import Variant, register_variant

    register_variant("tuned", Variant(lr=0.000123456789, alpha=0.87654321))
    assert main(["list"]) == 0
    (row,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("tuned")]
    assert "0.0001235" in row and "0.8765" in row and "0.000123456789" not in row


def test_a_table_touches_no_mlflow_store(tmp_path, capsys):
    assert main(["table", "estimator", "--out", str(tmp_path / "results")]) == 1
    assert "no run records" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.db"))


def test_a_missing_data_root_is_one_line_and_creates_nothing(tmp_path, capsys):
    root = tmp_path / "no" / "such"
    assert main(["run", "exact", "--data-root", str(root), "--no-track"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"the data root {root} does not exist" in err
    assert not (tmp_path / "no").exists()


def test_a_badly_typed_option_is_one_line_with_the_usage_one_help_away(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["run", "exact", "--epochs", "abc"])
    err = capsys.readouterr().err
    assert stopped.value.code == 2
    assert (
        err
        == "m2h run: error: argument --epochs: invalid int value: 'abc' (see `m2h run --help`)\n"
    )


def test_show_puts_the_shared_settings_before_the_familys_own(capsys):
    assert main(["show", "adgm"]) == 0
    part, part_of = None, {}
    for line in capsys.readouterr().out.splitlines():
        if line.endswith("):") and not line.startswith(" "):
            part = line
        elif part and line.startswith("  ") and line.split():
            part_of.setdefault(line.split()[0], part)
    shared = ["data (shared):", "optimisation (shared):", "stop rule (shared):"]
    assert list(dict.fromkeys(part_of.values()))[:4] == [*shared, "model (family adgm's own):"]
    assert part_of["labels"] == shared[0] and part_of["lr"] == shared[1]
    assert part_of["patience"] == shared[2] and part_of["eval_samples"].startswith("model")
