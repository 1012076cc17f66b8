"""Every zoo entry as a PyTorch citizen: pickle, torch.export with static and dynamic T, the
meta device, and torch.compile (first compile time, recompiles over 5 sequence lengths).

For each zoo entry (tests/references.py, at the tests' small dims) and form:
- pickle: pickle.loads(pickle.dumps(module)) gives the same outputs;
- export static / dynamic T: torch.export.export, with T marked dynamic (torch.export.Dim)
  in the second, and the exported program run at another T, against the eager module;
- meta: compiled under torch.device("meta") and run on meta inputs (shapes only);
- compile (auto form only; --compile-forms to change), in a fresh process with a fresh
  inductor cache per entry: torch.compile(dynamic=True, fullgraph=True, inductor), the
  seconds of the first call (forward and backward graphs: parameters require grad), then
  the number of recompiles over 5 other T (dynamo's unique graphs minus one),
  and the size guards inductor's CPU code still sets (its float32 sums choose their scheme
  by length: a guard such as T <= 4096 is a recompile where a longer T first comes).

Before the entry, the process compiles a one-line function: inductor's one-time setup (its
imports, the precompiled header it builds once per cache) is not the entry's cost; its
seconds are kept as warm_up_s. Compile times grow with other jobs on the CPU (--note).

Run: python bench/citizen.py [--entries ssd,retnet] [--no-compile] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import anatomy
from tests.inductor_guards import size_guards
from tests.references import REFERENCES, load_zoo, random_inputs
from tests.test_lowering import SMALL

FORMS = ("parallel", "chunked", "auto")
T0, T1 = 70, 133            # the export's example T, and the T it is run at after
COMPILE_T = (17, 64, 129, 300, 700)
TOL = 1e-4                  # relative RMSE against the eager module (float32)


def rel_rmse(got, want) -> float:
    got, want = got.double(), want.double()
    return ((got - want).pow(2).mean().sqrt() / want.pow(2).mean().sqrt().clamp_min(1e-30)).item()


def inputs_at(diagram, T: int) -> list[torch.Tensor]:
    xs = random_inputs(diagram, B=2, T=T, seed=1, dtype=torch.float32)
    return [xs[p.name] for p in diagram.inputs]


def agrees(got, want) -> None:
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    for g, w in zip(got, want):
        if g.shape != w.shape:
            raise AssertionError(f"shape {tuple(g.shape)} != {tuple(w.shape)}")
        err = rel_rmse(g, w)
        if not err <= TOL:
            raise AssertionError(f"relative RMSE {err:.2e} > {TOL}")


def attempt(fn) -> str:
    """'ok', or the first line of what went wrong."""
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - a benchmark reports every failure
        return f"FAIL {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
    return "ok"


def timed_axes(diagram) -> list[bool]:
    """Which inputs have the time axis first (dim 1 of the tensor)."""
    find = diagram.shapes.sizes.find
    return [bool(p.axes) and find(p.axes[0]) == find(diagram.time_axis) for p in diagram.inputs]


def entry(name: str, form: str, compile_it: bool) -> dict:
    dims = SMALL.get(name, {})
    diagram = load_zoo(name, **dims)
    module = anatomy.compile(diagram, form=form, **dims).eval()
    x0, x1 = inputs_at(diagram, T0), inputs_at(diagram, T1)
    with torch.no_grad():
        want0, want1 = module(*x0), module(*x1)
    row: dict = {"entry": name, "form": form}

    def pickled():
        with torch.no_grad():
            agrees(pickle.loads(pickle.dumps(module))(*x0), want0)

    def export_static():
        ep = torch.export.export(module, tuple(x0))
        agrees(ep.module()(*x0), want0)

    def export_dynamic():
        T = torch.export.Dim("T", min=3, max=4096)  # torch itself specialises T = 2
        shapes = tuple({1: T} if timed else None for timed in timed_axes(diagram))
        ep = torch.export.export(module, tuple(x0), dynamic_shapes=shapes)
        agrees(ep.module()(*x1), want1)

    def meta():
        with torch.device("meta"):
            m = anatomy.compile(diagram, form=form, **dims)
        out = m(*(x.to("meta") for x in x0))
        out = out if isinstance(out, tuple) else (out,)
        want = want0 if isinstance(want0, tuple) else (want0,)
        if [o.shape for o in out] != [w.shape for w in want] or out[0].device.type != "meta":
            raise AssertionError("wrong shapes or device")

    for key, fn in (("pickle", pickled), ("export_static", export_static),
                    ("export_dynamic_T", export_dynamic), ("meta", meta)):
        row[key] = attempt(fn)
    if compile_it:
        row.update(compile_in_child(name, form))
    return row


def compile_in_child(name: str, form: str) -> dict:
    """compile_row for one entry in a fresh Python process with a fresh inductor cache."""
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": tempfile.mkdtemp(prefix="inductor-")}
    done = subprocess.run([sys.executable, __file__, "--compile-one", name, form], env=env,
                          check=False,
                          capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines:
        return {"compile": f"FAIL child exited {done.returncode}: {done.stderr[-300:]}"}
    return json.loads(lines[-1])


def compile_one(name: str, form: str) -> dict:
    """The child's work: warm inductor up on a one-line function, then compile_row."""
    start = time.perf_counter()
    warm = torch.compile(lambda x: (x.sin() * 2).sum(-1), dynamic=True)
    warm(torch.randn(4, 8, requires_grad=True)).sum().backward()
    warm_up_s = round(time.perf_counter() - start, 2)
    dims = SMALL.get(name, {})
    diagram = load_zoo(name, **dims)
    module = anatomy.compile(diagram, form=form, **dims).train()
    return {"warm_up_s": warm_up_s, **compile_row(module, diagram)}


def compile_row(module, diagram) -> dict:
    """First compile time, recompiles over COMPILE_T, and inductor's size guards."""
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(module, dynamic=True, fullgraph=True)
    out: dict = {}
    with size_guards() as guards:
        try:
            start = time.perf_counter()
            compiled(*inputs_at(diagram, T0))
            out["first_compile_s"] = round(time.perf_counter() - start, 2)
            graphs = counters["stats"]["unique_graphs"]
            for T in COMPILE_T:
                agrees(compiled(*inputs_at(diagram, T)), module(*inputs_at(diagram, T)))
            out["recompiles_over_5_T"] = counters["stats"]["unique_graphs"] - graphs
            out["compile"] = "ok"
        except Exception as e:  # noqa: BLE001
            out["compile"] = f"FAIL {type(e).__name__}: {str(e).splitlines()[0][:160]}"
            traceback.print_exc(limit=3)
    out["size_guards"] = "; ".join(sorted(guards)) or "none"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", help="comma-separated zoo entries (default: all)")
    parser.add_argument("--forms", default=",".join(FORMS))
    parser.add_argument("--compile-forms", default="auto",
                        help="forms whose torch.compile is measured (default: auto)")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--compile-one", nargs=2, metavar=("ENTRY", "FORM"),
                        help=argparse.SUPPRESS)  # the child of compile_in_child
    parser.add_argument("--json", default="bench/results/citizen.json")
    parser.add_argument("--note", default="", help="a line on the machine's state, kept in "
                        "the JSON (compile times grow with other jobs on the CPU)")
    args = parser.parse_args()
    if args.compile_one:
        print(json.dumps(compile_one(*args.compile_one)))
        return
    names = args.entries.split(",") if args.entries else sorted(REFERENCES)
    forms = args.forms.split(",")
    rows = []
    columns = ("pickle", "export_static", "export_dynamic_T", "meta", "first_compile_s",
               "recompiles_over_5_T", "size_guards")
    print(f"{'entry':<32} {'form':<9} " + " ".join(f"{c:>18}" for c in columns[:-1])
          + "  size_guards", flush=True)
    for name in names:
        for form in forms:
            compile_it = not args.no_compile and form in args.compile_forms.split(",")
            row = entry(name, form, compile_it)
            rows.append(row)
            cells = [str(row.get(c, "-"))[:18] for c in columns[:-1]]
            print(f"{name:<32} {form:<9} " + " ".join(f"{c:>18}" for c in cells)
                  + f"  {row.get('size_guards', '-')}", flush=True)
            Path(args.json).write_text(json.dumps({
                "torch": torch.__version__, "threads": torch.get_num_threads(),
                "T_export": [T0, T1], "T_compile": COMPILE_T, "tolerance": TOL,
                "note": args.note,
                "rows": rows}, indent=1))
    failures = [(r["entry"], r["form"], k, v) for r in rows for k, v in r.items()
                if isinstance(v, str) and v.startswith("FAIL")]
    for f in failures:
        print("  ".join(f))
    print(f"wrote {args.json}; {len(failures)} failures")


if __name__ == "__main__":
    main()
