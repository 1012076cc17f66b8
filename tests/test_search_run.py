"""Searches end to end, kept tiny: a variant that is not finite at initialisation is excluded
before training, trials that diverge are recorded and do not stop the search, a trial is
deterministic, a search killed with SIGKILL resumes without losing or repeating a finished
trial, and bad input is refused before any training."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import anatomy
from anatomy.errors import AnatError
from anatomy.search import corpus as corpus_module
from anatomy.search.runner import SearchConfig, run_search
from anatomy.search.tasks import TaskSettings
from anatomy.search.train import TrialSpec, run_trial

ATTENTION = anatomy.zoo_dir() / "search" / "attention.anat"
TINY_MQAR = TaskSettings("mqar", seq_len=16, batch=8, vocab=16, pairs=2, eval_sequences=32)

# a mixer slot with a sound filler, one whose output is infinite at initialisation and one
# that overflows after its first step at a large learning rate
DIVERGING = """
# Test template: one sound mixer and two that overflow.
slot core(x[t, d]) -> y[t, d]

anatomy tpl(x[t, d]) -> y[t, d]
  dims d = 16
  y[t, d] = slot core(x)

anatomy mean_mixer(x[t, d]) -> y[t, d] fills core
  dims d
  y[t, d] = causal(t, s) * linear(x, in=[d], out=[d])[s, d] / t
"""


def write_template(tmp_path: Path) -> Path:
    path = tmp_path / "tpl.anat"
    path.write_text(DIVERGING.replace(
        "  y[t, d] = causal(t, s) * linear(x, in=[d], out=[d])[s, d] / t\n",
        "  u[t, d] = linear(x, in=[d], out=[d])\n"
        "  c[t, d] = causal(t, s) * u[s, d]\n"
        "  y[t, d] = c / (index(t) + 1)\n") +
        "\nanatomy overflow(x[t, d]) -> y[t, d] fills core\n  y[t, d] = exp(exp(exp(x + 9)))\n"
        # exp(40) at initialisation; Adam's first step at lr 1 moves a by about 1: exp(140)
        "\nanatomy blowup(x[t, d]) -> y[t, d] fills core\n  dims d\n"
        "  param a[d] ~ constant(0.4)\n  y[t, d] = x * exp(a * 100)\n")
    return path


def test_diverged_trials_are_recorded_and_the_search_goes_on(tmp_path):
    config = SearchConfig(template_file=str(write_template(tmp_path)), task=TINY_MQAR,
                          seeds=2, budget=400, out=tmp_path / "out", workers=0, layers=1,
                          progress=False, lr=1.0)
    lines: list[str] = []
    outcome = run_search(config, log=lines.append)
    assert outcome.counts == {"done": 2, "diverged": 2}
    rows = json.loads((tmp_path / "out" / "leaderboard.json").read_text())["rows"]
    assert [r["name"] for r in rows] == ["mean_mixer", "blowup", "overflow"]
    assert rows[0]["rank"] == 1 and rows[0]["done"] == 2 and rows[0]["mean"] is not None
    assert rows[1]["rank"] is None and rows[1]["diverged"] == 2
    assert rows[1]["note"].startswith("diverged: training loss nan at step 1")
    # infinite at initialisation: reported before training, never trained
    assert rows[2]["seeds"] == 0
    assert rows[2]["note"].startswith("excluded: non-finite at initialisation: the logits")
    assert any("excluded before training: overflow: non-finite at initialisation" in line
               for line in lines)
    for name in ("leaderboard.md", "leaderboard.csv", "loss_curves.png", "metric.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0


def test_more_seeds_for_some_variants_in_the_same_folder(tmp_path):
    """scripts/study/run.sh's second phase: the same search again with more seeds and a
    narrower --pick adds only the picked variants' new seeds; finished trials are kept."""
    template = str(write_template(tmp_path))
    base = {"template_file": template, "task": TINY_MQAR, "budget": 400,
            "out": tmp_path / "out", "workers": 0, "layers": 1, "progress": False, "lr": 1e-2}
    run_search(SearchConfig(**base, seeds=1, picks={"core": ["mean_mixer", "blowup"]}),
               log=lambda line: None)
    db = tmp_path / "out" / "search.db"

    def trials():
        with sqlite3.connect(db) as con:
            return sorted(con.execute("SELECT v.name, t.seed, t.metric FROM trials t JOIN "
                                      "variants v ON v.key = t.variant").fetchall())

    first = trials()
    assert [(n, s) for n, s, _ in first] == [("blowup", 0), ("mean_mixer", 0)]
    lines: list[str] = []
    outcome = run_search(SearchConfig(**base, seeds=3, picks={"core": ["mean_mixer"]}),
                         log=lines.append)
    after = trials()
    assert [(n, s) for n, s, _ in after] == [("blowup", 0)] + [("mean_mixer", s)
                                                               for s in range(3)]
    assert after[0] == first[0] and after[1] == first[1]  # seed 0 kept, not trained again
    assert "resuming: 2 of 4 trials already finished" in lines
    assert sum(outcome.counts.values()) == 4


def spec(seed: int = 0, positions: str = "learned", **task) -> TrialSpec:
    settings = TaskSettings(**{**TINY_MQAR.__dict__, **task})
    return TrialSpec(trial=0, variant="k", template_file=str(ATTENTION),
                     template_text=ATTENTION.read_text(), template="attention",
                     choice=(("kv_sharing", "mha"), ("feature_map", "identity"),
                             ("similarity", "scaled_dot"), ("mask", "selective_decay"),
                             ("normaliser", "no_normaliser")),
                     dims=(("d", 16), ("h", 2)), task=settings, seed=seed, budget=1000,
                     layers=1, positions=positions)


def test_a_trial_is_a_function_of_its_seed():
    a, b, c = run_trial(spec(0)), run_trial(spec(0)), run_trial(spec(1))
    assert a.status == "done", a.error
    assert a.metric == b.metric and a.curve == b.curve
    assert a.curve != c.curve
    assert a.tokens == 1000 // (8 * 16) * 8 * 16 and a.steps == 7


def test_language_modelling_on_a_corpus(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text((Path(anatomy.__file__).parent / "ir.py").read_text())
    # without positions: a learned table (initialised as the token embedding, N(0, 1)) is
    # still noise after 7 steps and puts this tiny model above 8 bits per byte
    r = run_trial(spec(0, positions="none", name="lm", corpus=str(text), vocab=256))
    assert r.status == "done", r.error
    # bits per byte of a model that has seen ~2k bytes: better than uniform (8 bits)
    assert 0 < r.metric < 8
    assert r.eval_loss == pytest.approx(r.metric * 0.6931471805599453, rel=1e-9)


def test_the_default_corpus_is_pinned(monkeypatch):
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    if version not in corpus_module.PINNED:  # another Python's standard library: refused
        with pytest.raises(AnatError, match="unknown for this version"):
            corpus_module.load_corpus()
    else:
        c = corpus_module.load_corpus()
        assert len(c.held_out) == len(c.data) - int(len(c.data) * 0.9)
        assert c.data.startswith(b"# ==== bisect.py\n")
    monkeypatch.setitem(corpus_module.PINNED, version, "0" * 64)
    with pytest.raises(AnatError, match="pinned hash is 0000"):
        corpus_module.load_corpus()


def cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "anatomy.cli", *map(str, args)],
                          capture_output=True, text=True, check=False, **kw)


SEARCH = ["search", ATTENTION, "--task", "mqar", "--dims", "d=16,h=2", "--seq-len", "16",
          "--batch", "8", "--vocab", "16", "--pairs", "2", "--layers", "1", "--no-progress",
          "--pick", "kv_sharing=mha", "--pick", "similarity=scaled_dot",
          "--pick", "feature_map=identity,relu_features", "--pick", "mask=causal_mask",
          "--pick", "normaliser=no_normaliser,relu_normaliser,sigmoid_normaliser"]


def test_bad_input_is_refused_before_training(tmp_path):
    bad = tmp_path / "bad.anat"
    bad.write_text("slot s(x[t, d]) -> y[t, d]\nanatomy t(x[t, d]) -> y[t, d]\n"
                   "  dims d = 4\n  y[t, d] = slot s(x) * nothing\n")
    for args in (["search", bad, "--task", "mqar"],
                 [*SEARCH, "--task", "lm", "--corpus", tmp_path / "missing.txt"],
                 [*SEARCH, "--pairs", "9"], [*SEARCH, "--budget", "lots"]):
        out = cli(*args, "--out", tmp_path / "out", timeout=60)
        assert out.returncode == 2, out.stderr
        assert "Traceback" not in out.stderr and "error" in out.stderr
    assert not (tmp_path / "out").exists()


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc to find the worker")
def test_kill_9_and_resume(tmp_path):
    """Kill a search (its process, with SIGKILL) after some trials finished; start it again:
    the finished trials stay as they were, none finishes twice, every trial ends."""
    out = tmp_path / "run"
    args = [sys.executable, "-m", "anatomy.cli", *map(str, SEARCH), "--seeds", "2",
            "--budget", "3000", "--workers", "1", "--out", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    db_path = out / "search.db"
    deadline = time.monotonic() + 180
    done_before: dict[int, tuple] = {}
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            if not db_path.exists():
                continue
            try:
                with sqlite3.connect(db_path, timeout=30) as db:
                    rows = db.execute("SELECT id, status, metric, finished_at FROM trials "
                                      "WHERE status IN ('done', 'diverged', 'failed')").fetchall()
            except sqlite3.OperationalError:  # the file exists, its tables not yet
                continue
            if rows:
                workers = children(proc.pid)
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                done_before = {r[0]: r for r in rows}
                break
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert done_before, "the search finished no trial before the deadline: " + proc.stderr.read()
    with sqlite3.connect(db_path) as db:
        total = db.execute("SELECT COUNT(*) FROM trials").fetchone()[0]
        finished_at_kill = db.execute("SELECT COUNT(*) FROM trials WHERE status != 'running' "
                                      "AND status != 'pending'").fetchone()[0]
    assert total == 12 and finished_at_kill < total, "kill the search before it ends"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{w}").exists() for w in workers):
        time.sleep(0.2)  # the worker notices its parent died and exits
    assert not any(Path(f"/proc/{w}").exists() for w in workers), "an orphaned worker"

    again = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stderr
    assert f"resuming: {finished_at_kill} of 12 trials already finished" in again.stderr
    with sqlite3.connect(db_path) as db:
        rows = {r[0]: r for r in db.execute(
            "SELECT id, status, metric, finished_at FROM trials").fetchall()}
        finishes = db.execute("SELECT trial, COUNT(*) FROM events WHERE kind='finished' "
                              "GROUP BY trial").fetchall()
    assert all(r[1] in ("done", "diverged", "failed") for r in rows.values())
    for trial, before in done_before.items():
        assert rows[trial] == before, "a trial finished before the kill is kept as it was"
    assert len(finishes) == 12 and all(n == 1 for _, n in finishes), "no trial finished twice"
    assert "| rank | variant |" in again.stdout


def test_load_dims_reach_the_fillers_of_a_trial():
    """`--dims g=4` makes gqa2 a four-group GQA in the trial's model too. With d = 16,
    h = 4 (n = 4), keys and values of g groups have 2 * d * g * n weights: g = 4 has
    2 * 16 * 2 * 4 = 256 more than g = 2, and as many as MHA (g = h)."""
    from anatomy.search.train import build_model

    def params(kv: str, dims: tuple) -> int:
        s = spec()
        s = TrialSpec(**{**s.__dict__, "dims": dims,
                         "choice": (("kv_sharing", kv),) + s.choice[1:]})
        return sum(p.numel() for p in build_model(s, 16).parameters())

    two = params("gqa2", (("d", 16), ("h", 4)))
    four = params("gqa2", (("d", 16), ("g", 4), ("h", 4)))
    assert four - two == 256
    assert four == params("mha", (("d", 16), ("h", 4)))
