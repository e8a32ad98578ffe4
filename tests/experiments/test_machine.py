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
