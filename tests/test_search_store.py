"""The search database: claims are exclusive, results are written once by their owner, the
trials of a dead process are claimed again, and a database refuses other settings."""

from __future__ import annotations

import subprocess
import sys

import pytest

from anatomy.errors import AnatError
from anatomy.search.store import SearchStore, owner_gone
from anatomy.search.train import TrialResult

SETTINGS = {"template": "t", "budget": 10}


def store_with_trials(path, owner=None, n=4):
    s = SearchStore(path, SETTINGS, owner=owner)
    s.add_variant("k", "v", [["slot", "f"]], ["v"])
    s.add_trials("k", range(n))
    return s


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_two_processes_never_claim_the_same_trial(tmp_path):
    a = store_with_trials(tmp_path / "s.db")
    b = SearchStore(tmp_path / "s.db", SETTINGS)
    got_a = a.claim(3)
    got_b = b.claim(3)
    assert len(got_a) == 3 and len(got_b) == 1
    assert not {t for t, _, _ in got_a} & {t for t, _, _ in got_b}
    assert b.claim(1) == []  # a's trials are running in a live process: not b's to take


def test_results_are_written_once_by_the_owner(tmp_path):
    a = store_with_trials(tmp_path / "s.db")
    b = SearchStore(tmp_path / "s.db", SETTINGS)
    (trial, _, _), = a.claim(1)
    assert not b.finish(trial, TrialResult("done", metric=0.1))  # not b's trial
    assert a.finish(trial, TrialResult("done", metric=0.5, curve=[(8, 2.0)]))
    assert not a.finish(trial, TrialResult("done", metric=0.9))  # finished: never rewritten
    row = next(t for t in a.trials() if t["id"] == trial)
    assert (row["status"], row["metric"], row["curve"]) == ("done", 0.5, [[8, 2.0]])
    events = a.db.execute("SELECT kind FROM events WHERE trial=?", (trial,)).fetchall()
    assert [e[0] for e in events] == ["claimed", "finished"]


def test_a_dead_owners_trials_are_claimed_again(tmp_path):
    import socket
    dead = f"{socket.gethostname()}:{dead_pid()}:cafe"
    a = store_with_trials(tmp_path / "s.db", owner=dead, n=2)
    a.claim(2)  # in flight when its process died
    b = SearchStore(tmp_path / "s.db", SETTINGS)
    got = b.claim(5)
    assert len(got) == 2
    attempts = [t["attempts"] for t in b.trials()]
    assert attempts == [2, 2]


def test_owner_liveness():
    import os
    import socket
    host = socket.gethostname()
    assert not owner_gone(f"{host}:{os.getppid()}:x", heartbeat=100.0, now=101.0)
    assert owner_gone(f"{host}:{dead_pid()}:x", heartbeat=100.0, now=101.0)
    # another host: alive while it beats within the lease
    assert not owner_gone("elsewhere:1:x", heartbeat=100.0, now=150.0, lease=60)
    assert owner_gone("elsewhere:1:x", heartbeat=100.0, now=200.0, lease=60)


def test_release_gives_trials_back(tmp_path):
    a = store_with_trials(tmp_path / "s.db", n=2)
    a.claim(2)
    a.release()
    assert a.counts() == {"pending": 2}


def test_other_settings_are_refused(tmp_path):
    store_with_trials(tmp_path / "s.db")
    with pytest.raises(AnatError, match="other settings \\(budget differ\\)"):
        SearchStore(tmp_path / "s.db", {"template": "t", "budget": 20})
