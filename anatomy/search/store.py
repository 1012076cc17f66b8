"""The search database (SQLite): the search's settings, its variants, and one row per trial,
written the moment the trial finishes.

Durability and resumption:
- every state change is one committed transaction (WAL journal, synchronous=FULL), so a
  process killed at any moment (kill -9 included) leaves each trial either finished, with
  its result, or not;
- a process claims a trial by marking it `running` with its owner (host, pid, a random
  token) inside an immediate transaction, so two processes never claim the same trial;
- a `running` trial whose owner is dead (same host: the pid is gone; another host: no
  heartbeat for `lease` seconds) is claimed again: that is the in-flight trial of a killed
  search, which never finished and so is not a repeat;
- a result is recorded only by the trial's current owner and only while the trial is
  `running`: a finished trial is never overwritten;
- `events` keeps an append-only log (claimed, finished, released) to audit all of this.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

from anatomy.errors import AnatError

from .train import TrialResult

LEASE = 600.0  # seconds without a heartbeat after which another host's trial is reclaimed

SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS variants (
    key TEXT PRIMARY KEY, name TEXT NOT NULL, choice TEXT NOT NULL, members TEXT NOT NULL,
    params INTEGER, excluded TEXT);
CREATE TABLE IF NOT EXISTS trials (
    id INTEGER PRIMARY KEY, variant TEXT NOT NULL REFERENCES variants(key),
    seed INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'running', 'done', 'diverged', 'failed')),
    owner TEXT, heartbeat REAL, attempts INTEGER NOT NULL DEFAULT 0,
    metric REAL, eval_loss REAL, train_loss REAL, tokens INTEGER, steps INTEGER,
    params INTEGER, seconds REAL, curve TEXT, error TEXT, finished_at REAL,
    UNIQUE (variant, seed));
CREATE TABLE IF NOT EXISTS events (
    trial INTEGER NOT NULL, kind TEXT NOT NULL, owner TEXT NOT NULL, at REAL NOT NULL);
"""


def _corrupt(path: Path, why: str) -> AnatError:
    return AnatError(f"{path} is not a usable search database: {why}",
                     hint="it is left as it is: give a new --out (or --db) to start another "
                          "search, or move the file away")


def _refuse_if_not_a_search(path: Path) -> None:
    """A file that exists must be an SQLite database (an empty file is not a new search)."""
    if not path.exists():
        return
    if path.is_dir():
        raise _corrupt(path, "it is a folder")
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise _corrupt(path, "the file is empty (zero length)")
    if head != b"SQLite format 3\x00":
        raise _corrupt(path, "the file is not an SQLite database")


def _check_tables(db: sqlite3.Connection) -> None:
    """The tables have the columns this version writes (not another program's tables)."""
    fresh = sqlite3.connect(":memory:")
    fresh.executescript(SCHEMA)
    for (table,) in fresh.execute("SELECT name FROM sqlite_master WHERE type='table'"):
        want = {row[1] for row in fresh.execute(f"PRAGMA table_info({table})")}
        have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if not want <= have:
            raise sqlite3.DatabaseError(f"table {table} lacks columns "
                                        f"{', '.join(sorted(want - have))}")
    fresh.close()


def new_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_gone(owner: str | None, heartbeat: float | None, now: float,
               lease: float = LEASE) -> bool:
    """Whether a running trial's owner can no longer finish it."""
    if not owner:
        return True
    host, _, rest = owner.partition(":")
    if host == socket.gethostname():
        pid = int(rest.partition(":")[0])
        if pid != os.getpid() and not _pid_alive(pid):
            return True
    return heartbeat is None or now - heartbeat > lease


class SearchStore:
    """One search's database. Open it with the search's settings: a database holding a
    search with other settings is refused, so a resumed search is the same search."""

    def __init__(self, path: str | Path, settings: dict, owner: str | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _refuse_if_not_a_search(self.path)
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=60.0)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            if self.db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("the integrity check failed")
            self.db.executescript(SCHEMA)
            _check_tables(self.db)
            self.owner = owner or new_owner()
            self._check_settings(settings)
        except (sqlite3.DatabaseError, ValueError) as e:  # ValueError: corrupt settings JSON
            raise _corrupt(self.path, str(e)) from None

    def close(self) -> None:
        self.db.close()

    def _transaction(self):
        return _Immediate(self.db)

    def _check_settings(self, settings: dict) -> None:
        text = json.dumps(settings, sort_keys=True)
        with self._transaction():
            row = self.db.execute("SELECT value FROM settings WHERE key='search'").fetchone()
            if row is None:
                self.db.execute("INSERT INTO settings VALUES ('search', ?)", (text,))
                return
        if row[0] != text:
            old = json.loads(row[0])
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise AnatError(f"{self.path} holds a search with other settings "
                            f"({', '.join(diff)} differ)",
                            hint="resume with the same command, or give a new --out")

    # -- the plan ---------------------------------------------------------------------------
    def add_variant(self, key: str, name: str, choice, members: list[str],
                    excluded: str | None = None) -> None:
        with self._transaction():
            self.db.execute("INSERT OR IGNORE INTO variants VALUES (?, ?, ?, ?, NULL, ?)",
                            (key, name, json.dumps(choice), json.dumps(members), excluded))

    def add_trials(self, variant: str, seeds: Iterable[int]) -> None:
        with self._transaction():
            self.db.executemany("INSERT OR IGNORE INTO trials (variant, seed) VALUES (?, ?)",
                                [(variant, s) for s in seeds])

    # -- claiming and finishing -------------------------------------------------------------
    def claim(self, n: int = 1) -> list[tuple[int, str, int]]:
        """Up to `n` trials to run, as (id, variant, seed): pending ones first, then running
        ones whose owner is gone. They are this process's until it finishes them."""
        now = time.time()
        with self._transaction():
            rows = self.db.execute(
                "SELECT id, variant, seed FROM trials WHERE status='pending' ORDER BY id "
                "LIMIT ?", (n,)).fetchall()
            if len(rows) < n:
                stale = self.db.execute(
                    "SELECT id, variant, seed, owner, heartbeat FROM trials "
                    "WHERE status='running' AND owner != ? ORDER BY id", (self.owner,))
                rows += [r[:3] for r in stale.fetchall()
                         if owner_gone(r[3], r[4], now)][:n - len(rows)]
            for trial, _, _ in rows:
                self.db.execute("UPDATE trials SET status='running', owner=?, heartbeat=?, "
                                "attempts=attempts+1 WHERE id=?", (self.owner, now, trial))
                self._event(trial, "claimed", now)
        return rows

    def finish(self, trial: int, result: TrialResult) -> bool:
        """Record a result; False (and nothing written) if the trial is no longer ours."""
        now = time.time()
        with self._transaction():
            cur = self.db.execute(
                "UPDATE trials SET status=?, metric=?, eval_loss=?, train_loss=?, tokens=?, "
                "steps=?, params=?, seconds=?, curve=?, error=?, finished_at=? "
                "WHERE id=? AND owner=? AND status='running'",
                (result.status, result.metric, result.eval_loss, result.train_loss,
                 result.tokens, result.steps, result.params, result.seconds,
                 json.dumps(result.curve), result.error, now, trial, self.owner))
            if cur.rowcount:
                self._event(trial, "finished", now)
            return bool(cur.rowcount)

    def release(self) -> None:
        """Give this process's unfinished trials back (on an orderly stop)."""
        now = time.time()
        with self._transaction():
            ids = [r[0] for r in self.db.execute(
                "SELECT id FROM trials WHERE status='running' AND owner=?", (self.owner,))]
            self.db.execute("UPDATE trials SET status='pending', owner=NULL, heartbeat=NULL "
                            "WHERE status='running' AND owner=?", (self.owner,))
            for trial in ids:
                self._event(trial, "released", now)

    def heartbeat(self) -> None:
        with self._transaction():
            self.db.execute("UPDATE trials SET heartbeat=? WHERE status='running' AND owner=?",
                            (time.time(), self.owner))

    def _event(self, trial: int, kind: str, now: float) -> None:
        self.db.execute("INSERT INTO events VALUES (?, ?, ?, ?)", (trial, kind, self.owner, now))

    # -- reading ------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        rows = self.db.execute("SELECT status, COUNT(*) FROM trials GROUP BY status")
        return dict(rows.fetchall())

    def trials(self) -> list[dict]:
        """Every trial with its variant's name, as dicts (curve decoded)."""
        cur = self.db.execute(
            "SELECT t.*, v.name AS name FROM trials t JOIN variants v ON v.key = t.variant "
            "ORDER BY t.id")
        names = [c[0] for c in cur.description]
        out = []
        for row in cur.fetchall():
            r = dict(zip(names, row))
            r["curve"] = json.loads(r["curve"]) if r["curve"] else []
            out.append(r)
        return out

    def variants(self) -> list[dict]:
        cur = self.db.execute("SELECT * FROM variants ORDER BY rowid")
        names = [c[0] for c in cur.description]
        out = []
        for row in cur.fetchall():
            v = dict(zip(names, row))
            v["choice"], v["members"] = json.loads(v["choice"]), json.loads(v["members"])
            out.append(v)
        return out


class _Immediate:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): one writer at a time."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind, value, tb):
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")
        return False
