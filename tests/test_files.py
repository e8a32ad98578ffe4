"""harness.files: a folder proven writable, by many writers at once."""

import threading

import pytest

from harness.files import OutputError, ensure_writable


def test_writers_proving_one_folder_at_once_never_fail_each_other(tmp_path):
    """Two runs of one ablation start together and check the checkpoint folder: each probe is the
    checker's own, so one never removes the other's (a shared probe name failed one of them)."""
    folder = tmp_path / "checkpoints"
    failures: list[BaseException] = []
    start = threading.Barrier(8)

    def check() -> None:
        start.wait()
        for _ in range(200):
            try:
                ensure_writable(folder, "checkpoint folder")
            except OutputError as err:
                failures.append(err)

    threads = [threading.Thread(target=check) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert list(tmp_path.iterdir()) == []  # no probe left behind, no folder made


def test_proving_a_folder_writable_makes_nothing(tmp_path):
    ensure_writable(tmp_path / "results" / "runs", "results folder")
    assert list(tmp_path.iterdir()) == []  # a command refused later leaves no empty folder


def test_a_folder_that_cannot_be_made_is_one_clear_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match=r"^the checkpoint folder .*/file/sub cannot be written"):
        ensure_writable(tmp_path / "file" / "sub", "checkpoint folder")
