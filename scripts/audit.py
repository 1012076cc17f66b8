"""Re-run the reliability audit of issue 20 and count, per category, what happened:
tried / clean / traceback / hang / forged proof accepted / data lost.

clean: exit 0, or exit 1/2 with a message and no traceback; traceback: a Python traceback
(or any other exit status); hang: no answer within the time limit; forged proof accepted:
an edited proof that verify-proof calls verified; data lost: a search database whose bytes
changed although the command refused it. Each case runs `python -m anatomy.cli` as a new
process.

Run: python scripts/audit.py [--flips 20] [--proof-edits 40] [--timeout 60]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ZOO = ROOT / "zoo"
COLUMNS = ("tried", "clean", "traceback", "hang", "forged proof accepted", "data lost")


def anatomy(*argv, timeout: float, cwd=None) -> tuple[int | None, str]:
    try:
        p = subprocess.run([sys.executable, "-m", "anatomy.cli", *map(str, argv)],
                           check=False, capture_output=True, text=True, timeout=timeout,
                           cwd=cwd,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    except subprocess.TimeoutExpired:
        return None, ""
    return p.returncode, p.stdout + p.stderr


class Audit:
    def __init__(self, timeout: float):
        self.timeout = timeout
        self.rows: dict[str, Counter] = {}

    def case(self, category: str, *argv, cwd=None, forged: bool = False,
             db: Path | None = None) -> None:
        row = self.rows.setdefault(category, Counter())
        before = db.read_bytes() if db is not None and db.exists() else None
        code, out = anatomy(*argv, timeout=self.timeout, cwd=cwd)
        row["tried"] += 1
        if code is None:
            row["hang"] += 1
        elif "Traceback (most recent call last)" in out or code not in (0, 1, 2):
            row["traceback"] += 1
            print(f"TRACEBACK in {category}: {argv}\n{out[-800:]}", file=sys.stderr)
        elif forged and code == 0:
            row["forged proof accepted"] += 1
            print(f"FORGED proof accepted: {argv}", file=sys.stderr)
        else:
            row["clean"] += 1
        if before is not None and code != 0 and db.read_bytes() != before:
            row["data lost"] += 1


def doubling_chain(depth: int) -> str:
    parts = [f"anatomy a{i}(x[t, d]) -> y[t, d]\n  dims d = 4\n"
             f"  y[t, d] = a{i + 1}(x) + a{i + 1}(x)\n" for i in range(depth)]
    parts.append(f"anatomy a{depth}(x[t, d]) -> y[t, d]\n  dims d = 4\n"
                 "  param w[d] ~ ones\n  y[t, d] = x * w\n")
    return "\n".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--flips", type=int, default=20, help="byte-flipped databases")
    ap.add_argument("--proof-edits", type=int, default=40, help="random proof edits")
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--json", default="bench/results/audit.json")
    args = ap.parse_args()
    rng = random.Random(0)
    audit = Audit(args.timeout)
    tmp = Path(tempfile.mkdtemp(prefix="anatomy-audit-"))

    # 1. exponential programs
    for depth in (16, 30):
        f = tmp / f"chain{depth}.anat"
        f.write_text(doubling_chain(depth))
        for argv in (["check", f], ["print", f"{f}:a0"], ["render", f"{f}:a0", "--depth", "30"],
                     ["compile", f, "--name", "a0"]):
            audit.case("doubling chain", *argv)

    # 2. options and huge dims
    for argv in (["compile", ZOO / "mha.anat", "--dims", "d=1000000000000"],
                 ["compile", ZOO / "mha.anat", "--dims", "d=50000"],
                 ["compile", ZOO / "retnet.anat", "--dims", "d=64", "--run", "--seq",
                  "1000000000"],
                 ["search", ZOO / "search/attention.anat", "--task", "mqar", "--workers", "-1"],
                 ["search", ZOO / "search/attention.anat", "--task", "mqar", "--lr", "nan"],
                 ["search", ZOO / "search/attention.anat", "--task", "mqar", "--lr", "inf"],
                 ["search", ZOO / "search/attention.anat", "--task", "mqar", "--lr", "0"],
                 ["render", ZOO / "mha.anat", "-o", "/proc/anatomy/x.svg"],
                 ["render", ZOO, "-o", "/proc/anatomy-gallery"]):
        audit.case("options", *argv)
    readonly = tmp / "readonly"
    readonly.mkdir()
    readonly.chmod(0o500)
    # root writes into a 0500 folder, so there the search would run: /proc takes no folder
    unwritable = "/proc/anatomy-run" if os.geteuid() == 0 else readonly / "run"
    audit.case("options", "search", ZOO / "search/attention.anat", "--task", "mqar",
               "--variant", "mha identity scaled_dot causal_mask softmax_normaliser",
               "--budget", "1k", "--seq-len", "32", "--batch", "2", "--workers", "0",
               "--no-progress", "--out", unwritable)
    bom = tmp / "bom.anat"
    bom.write_bytes(b"\xef\xbb\xbf" + (ZOO / "mha.anat").read_bytes())
    audit.case("options", "check", bom)

    # 3. search databases: refused, and left as they were
    from anatomy.search.store import SearchStore
    good = tmp / "good.db"
    store = SearchStore(good, {"audit": 1})
    store.add_variant("k", "v", ["x"], ["v"])
    store.add_trials("k", range(200))
    store.close()
    data = good.read_bytes()
    kinds = {"zero-length": b"", "text": b"hello, not a database\n",
             "truncated": data[: len(data) // 3]}
    for i in range(args.flips):
        flipped = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        kinds[f"flip{i}"] = bytes(flipped)
    search = ["search", ZOO / "search/attention.anat", "--task", "mqar", "--dims", "d=16,h=2",
              "--variant", "mha identity scaled_dot causal_mask softmax_normaliser",
              "--budget", "1k", "--seq-len", "32", "--batch", "2", "--workers", "0",
              "--no-progress"]
    for name, content in kinds.items():
        folder = tmp / f"db-{name}"
        folder.mkdir()
        (folder / "search.db").write_bytes(content)
        audit.case("search databases", *search, "--out", folder, db=folder / "search.db")
    # the good database, with other settings: refused, unchanged
    folder = tmp / "db-good"
    folder.mkdir()
    shutil.copy(good, folder / "search.db")
    audit.case("search databases", *search, "--out", folder, db=folder / "search.db")

    # 4. proof files: malformed, forged, moved
    proofs = tmp / "proofs"
    proofs.mkdir()
    for name in ("forms.anat", "cores.anat"):
        shutil.copy(ZOO / name, proofs / name)
    code, out = anatomy("prove", proofs / "forms.anat:ssm_core", proofs / "cores.anat:ssd_core",
                        "--json", proofs / "proof.json", timeout=args.timeout)
    assert code == 0, out
    proof = json.loads((proofs / "proof.json").read_text())

    def write(name: str, value) -> Path:
        path = proofs / name
        path.write_text(value if isinstance(value, str) else json.dumps(value))
        return path

    def edited(edit) -> dict:
        copy = json.loads(json.dumps(proof))
        edit(copy)
        return copy
    malformed = {"missing key": edited(lambda p: p["left"].pop("name")),
                 "null": edited(lambda p: p.__setitem__("left_steps", None)),
                 "wrong type": edited(lambda p: p["left"].__setitem__("dims", [1])),
                 "nested": "[" * 200_000 + "]" * 200_000, "not json": "{",
                 "empty": "", "top-level list": []}
    for name, value in malformed.items():
        audit.case("proof files", "verify-proof", write(f"bad-{len(name)}.json", value))
    forgeries = {
        "step text": lambda p: p["left_steps"][0].__setitem__("text", "anatomy x() -> y[t]\n"),
        "statement": lambda p: p["left_steps"][0].__setitem__("statement", "anything"),
        "kind": lambda p: p["left_steps"][0].__setitem__("kind", "approximate"),
        "meet": lambda p: p.__setitem__("meet", "0" * 24),
        "left text": lambda p: p["left"].__setitem__("text", p["left"]["text"] + "\n"),
        "right text": lambda p: p["right"].__setitem__("text", ""),
        "approximate flag": lambda p: p.__setitem__("approximate", True),
        "no sha256": lambda p: p["left"].pop("sha256"),
        "null sha256": lambda p: p["left"].__setitem__("sha256", None),
        "step dropped": lambda p: p["left_steps"].pop(),
    }
    for name, edit in forgeries.items():
        audit.case("forged proofs", "verify-proof",
                   write(f"forged-{name.replace(' ', '_')}.json", edited(edit)), forged=True)
    places = []

    def walk(value, path=()):
        places.append(path)
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, path + (k,))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, path + (i,))
    walk(proof)
    junk = [None, 0, -1, 1.5, "", "x", [], {}, True, "0" * 24, [[[[[]]]]]]
    for i in range(args.proof_edits):
        where = rng.choice(places[1:])
        copy = json.loads(json.dumps(proof))
        parent = copy
        for key in where[:-1]:
            parent = parent[key]
        if rng.random() < 0.3:
            del parent[where[-1]]
        else:
            parent[where[-1]] = rng.choice(junk)
        audit.case("forged proofs", "verify-proof", write(f"random-{i}.json", copy),
                   forged=copy != proof)
    # moved with its sources, replayed from elsewhere; then a source missing
    moved = tmp / "moved" / "deeper"
    shutil.copytree(proofs, moved)
    audit.case("proof paths", "verify-proof", moved / "proof.json", cwd="/")
    (moved / "cores.anat").unlink()
    audit.case("proof paths", "verify-proof", moved / "proof.json", cwd="/")

    readonly.chmod(0o700)
    shutil.rmtree(tmp, ignore_errors=True)
    total = Counter()
    print(f"{'category':<20} " + " ".join(f"{c:>10}" for c in COLUMNS))
    for category, row in audit.rows.items():
        total.update(row)
        print(f"{category:<20} " + " ".join(f"{row[c]:>10}" for c in COLUMNS))
    print(f"{'total':<20} " + " ".join(f"{total[c]:>10}" for c in COLUMNS))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(
        {k: dict(v) for k, v in {**audit.rows, "total": total}.items()}, indent=1) + "\n")


if __name__ == "__main__":
    main()
