"""`anatomy search --executor ray --address ...` against a Ray instance this test starts on
this machine (opt-in: pytest -m ray; needs `pip install 'anatomy[ray]'`)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import anatomy

pytestmark = pytest.mark.ray
ray = pytest.importorskip("ray")

ATTENTION = anatomy.zoo_dir() / "search" / "attention.anat"


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()  # stops the instance this test started


def test_search_on_a_ray_cluster(cluster, tmp_path):
    out = tmp_path / "ray"
    cmd = [sys.executable, "-m", "anatomy.cli", "search", str(ATTENTION), "--task", "mqar",
           "--dims", "d=16,h=2", "--seq-len", "16", "--batch", "8", "--vocab", "16",
           "--pairs", "2", "--layers", "1", "--budget", "2000", "--seeds", "2",
           "--variant", "mha identity scaled_dot causal_mask softmax_normaliser",
           "--variant", "mha identity scaled_dot selective_decay no_normaliser",
           "--executor", "ray", "--address", cluster, "--out", str(out), "--no-progress"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr
    data = json.loads((out / "leaderboard.json").read_text())
    assert data["trials"] == {"done": 4}
    assert all(r["done"] == 2 and r["mean"] is not None for r in data["rows"])
    # the same search in this process gives the same numbers: Ray ran the same trials
    local = cmd[:cmd.index("--executor")] + ["--workers", "0", "--out", str(tmp_path / "here"),
                                              "--no-progress"]
    here = subprocess.run(local, capture_output=True, text=True, timeout=600, check=False)
    assert here.returncode == 0, here.stderr
    mine = json.loads((tmp_path / "here" / "leaderboard.json").read_text())["rows"]
    assert [(r["name"], r["mean"], r["std"]) for r in mine] == \
        [(r["name"], r["mean"], r["std"]) for r in data["rows"]]
