from __future__ import annotations

from harness.experiments import machine


def test_threads_are_the_idle_cores_shared_between_jobs(monkeypatch):
    monkeypatch.setattr(machine, "usable_cores", lambda: 8)
    monkeypatch.setattr(machine, "load", lambda: 0.2)
    assert machine.default_threads() == 8 and machine.default_threads(jobs=2) == 4
    monkeypatch.setattr(machine, "load", lambda: 6.0)  # another process keeps 6 cores busy
    assert machine.default_threads() == 2 and machine.default_threads(jobs=4) == 1
    monkeypatch.setattr(machine, "load", lambda: 30.0)
    assert machine.default_threads() == 1


def test_bench_says_when_the_machine_is_busy(monkeypatch):
    monkeypatch.setattr(machine, "usable_cores", lambda: 2)
    monkeypatch.setattr(machine, "load", lambda: 0.1)
    assert machine.busy_note() is None
    monkeypatch.setattr(machine, "load", lambda: 1.9)
    assert "busy (load 1.9 on 2 cores)" in machine.busy_note()


def test_a_run_on_fewer_threads_than_cores_says_why_and_how_to_choose(monkeypatch):
    monkeypatch.setattr(machine, "usable_cores", lambda: 2)
    monkeypatch.setattr(machine, "load", lambda: 1.2)
    note = machine.threads_note(1)
    assert note == (
        "each run takes 1 thread of 2 cores: the load average says 1 of them are busy "
        "(--threads N sets it)"
    )
    assert machine.threads_note(1, jobs=2) is None  # two runs, a core each: every core used
    assert machine.threads_note(2) is None
