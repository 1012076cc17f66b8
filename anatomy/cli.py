"""The `anatomy` command line: check, print, compile, prove and render .anat programs, list
the zoo, and enumerate and search the fillings of templates.

Errors in user input print as `file:line:col: error: ...` with the line and a caret, and
exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import time
from pathlib import Path

from .errors import AnatError
from .program import load, load_text, resolve_zoo


def parse_dims(text: str | None) -> dict[str, int]:
    """`d=512,h=8` -> {"d": 512, "h": 8}."""
    dims: dict[str, int] = {}
    if not text:
        return dims
    for part in text.split(","):
        key, eq, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not key.isidentifier() or not value.isdigit() or int(value) <= 0:
            raise AnatError(f"bad --dims entry `{part}`",
                            hint="write --dims name=positive_integer,... e.g. d=512,h=8")
        dims[key] = int(value)
    return dims


@functools.cache
def read_stdin() -> str:
    return sys.stdin.read()


def load_arg(path: str | Path, **kwargs):
    """`load` for a file named on the command line; `-` reads the program from stdin."""
    if str(path) == "-":
        return load_text(read_stdin(), "<stdin>", **kwargs)
    return load(path, **kwargs)


def expand(paths: list[str]) -> list[Path]:
    """Files named on the command line; a directory means every .anat file in it; `-` is
    standard input; a zoo name (`ssd`, `zoo/`) is read from the installed zoo."""
    out: list[Path] = []
    for p in paths:
        zoo = resolve_zoo(p) if p != "-" else None
        path = zoo[0] if zoo else Path(p)
        if path.is_dir():
            found = sorted(path.glob("*.anat"))
            if not found:
                raise AnatError(f"no .anat files in {p}")
            out.extend(found)
        else:
            out.append(path)
    return out


def split_target(target: str) -> tuple[str, str | None]:
    """`file.anat:name` -> ("file.anat", "name")."""
    if ":" in target and not Path(target).exists():
        file, _, name = target.rpartition(":")
        return file, name or None
    return target, None


def cmd_check(args) -> int:
    dims = parse_dims(args.dims)
    start = time.perf_counter()
    count = 0
    used: set[str] = set()
    for path in expand(args.files):
        program = load_arg(path, strict_dims=False, **dims)
        for d in program:
            used.update(k for k in dims if k in d.dims)
            s = d.shapes
            ins = ", ".join(s.describe(p.name, p.axes) for p in d.inputs)
            outs = ", ".join(s.describe(p.name, p.axes) for p in d.outputs)
            n = s.param_count()
            params = f"{n:,} params" if n is not None else "params depend on " + \
                ", ".join(s.free_axes(params_only=True))
            fills = f"  fills {d.fills}" if d.fills else ""
            print(f"{path.name}:{d.name}  ({ins}) -> {outs}  {params}{fills}")
            count += 1
    unused = [k for k in dims if k not in used]
    if unused:
        raise AnatError(f"--dims {unused[0]}: no anatomy checked declares a dim `{unused[0]}`")
    elapsed = time.perf_counter() - start
    print(f"ok: {count} anatomies checked in {elapsed * 1000:.0f} ms", file=sys.stderr)
    return 0


def cmd_print(args) -> int:
    from .printer import print_diagram, print_program
    file, name = split_target(args.target)
    program = load_arg(file)
    print(print_diagram(program[name]) if name else print_program(program), end="")
    return 0


def cmd_compile(args) -> int:
    """Compile anatomies to nn.Modules; --print-code shows the generated code; --run runs
    each once on random inputs (the README's main job does this for the whole zoo)."""
    import torch

    from .lowering import compile as compile_anatomy
    dims = parse_dims(args.dims)
    seq = args.seq
    for path in expand(args.files):
        program = load_arg(path, strict_dims=False, **dims)
        names = [args.name] if args.name else list(program.own)
        for name in names:
            d = program[name]
            own = {k: v for k, v in dims.items() if k in d.dims}
            start = time.perf_counter()
            module = compile_anatomy(d, form=args.form, memory_limit=args.memory_limit, **own)
            ms = (time.perf_counter() - start) * 1e3
            line = f"{path.name}:{name}  compiled in {ms:.1f} ms ({args.form})"
            if args.run:
                from .lowering.memory import activation_bytes, guard
                guard(f"running {name} at T={seq}",
                      activation_bytes(module.shapes, 2, seq, args.form), args.memory_limit)
                inputs = []
                for p in d.inputs:
                    shape = [2] + [module.shapes.size(a) or (seq if a == d.time_axis else 4)
                                   for a in p.axes]
                    x = torch.randn(shape)
                    inputs.append(-torch.nn.functional.softplus(x)
                                  if p.name.startswith("log") else x)
                start = time.perf_counter()
                with torch.no_grad():
                    out = module(*inputs)
                run_ms = (time.perf_counter() - start) * 1e3
                outs = out if isinstance(out, tuple) else (out,)
                ok = all(bool(torch.isfinite(o).all()) for o in outs)
                line += (f", ran T={seq} in {run_ms:.1f} ms -> "
                         f"{' '.join(str(tuple(o.shape)) for o in outs)}"
                         f"{'' if ok else '  NOT FINITE'}")
                if not ok:
                    raise AnatError(f"{name}: output is not finite on random inputs")
            print(line)
            if args.print_code:
                print(module.code)
    return 0


def load_target(target: str, dims: dict[str, int]):
    """`file.anat:name` (or a file with one anatomy) -> (Diagram, file, name); a zoo name
    gives the installed zoo file it means (a proof pins and finds that file)."""
    file, name = split_target(target)
    program = load_arg(file, strict_dims=False, **dims)
    zoo = resolve_zoo(file) if file != "-" else None
    if zoo is not None:
        file = str(zoo[0])
        if name is None and zoo[1] in program.own:
            name = zoo[1]  # a zoo anatomy by name: `anatomy render ssd_core`
    if name is None:
        if len(program.own) != 1:
            raise AnatError(f"{file} defines {len(program.own)} anatomies "
                            f"({', '.join(program.own)}): name one",
                            hint=f"write {file}:NAME, e.g. {file}:{program.own[-1]}"
                            if program.own else None)
        name = program.own[0]
    return program[name], file, name


def cmd_prove(args) -> int:
    """Prove two anatomies equal by rewriting, or refuse (exit 1) with a counterexample."""
    from .rewrite import Proof, Side
    from .verify import prove
    dims = parse_dims(args.dims)
    sides = []
    for target in (args.left, args.right):
        d, file, name = load_target(target, dims)
        sides.append(Side(d, file, name, {k: v for k, v in dims.items() if k in d.dims}))
    result = prove(*sides, allow_approximate=args.allow_approximate)
    if not isinstance(result, Proof):
        print(result.render())
        return 1
    print(result.render(show_diagrams=not args.brief))
    if args.svg:
        from .render import proof_pictures
        index = proof_pictures(result, args.svg)
        print(f"proof pictures written to {index}", file=sys.stderr)
    if args.json:
        result.save(args.json)
        print(f"proof written to {args.json} (check it: anatomy verify-proof {args.json})",
              file=sys.stderr)
    return 0


def cmd_verify_proof(args) -> int:
    from .verify import verify_proof
    result = verify_proof(args.proof, allow_unpinned=args.allow_unpinned)
    print(result.render())
    return 0 if result.ok else 1


def cmd_rules(args) -> int:
    """The rule table; with --certify, each rule's certificate (sympy and numeric)."""
    from .rewrite import RULES
    from .verify import certify
    ok = True
    for rule in RULES.values():
        if args.certify:
            cert = certify(rule)
            ok &= cert.ok
            print(cert.render(), flush=True)
        else:
            mark = "normalising" if rule.normalising else ""
            print(f"{rule.name:<20} {rule.kind:<11} {mark:<11} {rule.statement}")
    if args.certify:
        print(f"{len(RULES)} rules, {'all certified' if ok else 'SOME REJECTED'}",
              file=sys.stderr)
    return 0 if ok else 1


def cmd_render(args) -> int:
    """One anatomy as an SVG (or DOT) picture; a directory as a gallery."""
    from .render import render_gallery, to_dot, to_svg
    from .render.output import write_text
    folder = (resolve_zoo(args.target) or (Path(args.target), None))[0]
    if folder.is_dir():
        if args.format != "svg" or not args.output:
            raise AnatError("rendering a directory writes a gallery of SVGs: give -o FOLDER "
                            "(and no --format dot)", hint="e.g. anatomy render zoo/ -o site/")
        index = render_gallery(folder, Path(args.output), args.depth)
        print(f"wrote {index}", file=sys.stderr)
        return 0
    diagram, _, _ = load_target(args.target, parse_dims(args.dims))
    render = to_dot if args.format == "dot" else to_svg
    text = render(diagram, args.depth)
    if args.output:
        write_text(Path(args.output), text)
    else:
        sys.stdout.write(text)
    return 0


def cmd_zoo(args) -> int:
    """The zoo's catalogue: one line per file (its paper), or docs/zoo.md with --markdown."""
    from .catalog import zoo_markdown, zoo_text
    if args.paths:
        from .program import zoo_names
        for name, path in zoo_names().items():
            print(f"{name}\t{path}")
        return 0
    print(zoo_markdown() if args.markdown else zoo_text(), end="")
    return 0


def parse_picks(picks: list[str] | None) -> dict[str, list[str]]:
    """`--pick mask=causal_mask,fixed_decay` (repeatable) -> {"mask": [...]}."""
    out: dict[str, list[str]] = {}
    for text in picks or []:
        slot, eq, fillers = text.partition("=")
        names = [f.strip() for f in fillers.split(",") if f.strip()]
        if not eq or not slot.strip().isidentifier() or not names:
            raise AnatError(f"bad --pick `{text}`",
                            hint="write --pick SLOT=FILLER[,FILLER...], e.g. mask=causal_mask")
        out.setdefault(slot.strip(), []).extend(names)
    return out


def load_space(args):
    from .search.space import SearchSpace
    file, name = split_target(args.template)
    return SearchSpace.load(file, name, parse_dims(args.dims), parse_picks(args.pick))


def cmd_enumerate(args) -> int:
    """List every type-correct filling of a template, one line per canonical class."""
    space = load_space(args)
    sizes = ", ".join(f"{s} ({len(space.fillers[s])})" for s in space.slots)
    print(f"template {space.template.name}: {space.size} fillings of slots {sizes}")
    result = space.enumerate(workers=args.workers)
    if not args.quiet:
        for i, c in enumerate(result.classes.values(), 1):
            same = [m.name for m in c.members[1:]]
            also = f"  = {', '.join(same)}" if same else ""
            print(f"{i:5d}  {c.key[:12]}  {c.name}{also}")
        for f in result.rejected:
            print(f"refused  {f.name}: {f.error}")
    print(result.summary())
    return 0


def parse_tokens(text: str) -> int:
    """A token count: `300000`, `300k`, `1.5M`."""
    scale = {"k": 10**3, "m": 10**6, "g": 10**9}.get(text[-1:].lower(), 1)
    number = text[:-1] if scale > 1 else text
    try:
        value = int(float(number) * scale)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a token count such as 300000 or 1.5M, "
                                         f"got {text!r}")
    return value


def cmd_search(args) -> int:
    """Train every picked variant of a template on a task; print the leaderboard."""
    from .search.runner import SearchConfig, run_search
    from .search.tasks import TaskSettings
    file, name = split_target(args.template)
    variants = list(args.variant or [])
    if args.variants:
        try:
            lines = Path(args.variants).read_text().splitlines()
        except OSError as e:
            raise AnatError(f"cannot read --variants {args.variants}: {e}") from None
        variants += [ln.split("#")[0].strip() for ln in lines if ln.split("#")[0].strip()]
    pairs = args.pairs if args.pairs is not None else max(1, args.seq_len // 16)
    task = TaskSettings(args.task, seq_len=args.seq_len, batch=args.batch, vocab=args.vocab,
                        pairs=pairs, corpus=args.corpus)
    if args.task != "lm":
        from .search.tasks import TASKS
        if args.corpus:
            raise AnatError("--corpus is for --task lm")
        problem = TASKS[args.task].problem(args.seq_len, args.vocab, pairs)
        if problem:
            raise AnatError(f"{args.task}: {problem}", hint="change --seq-len, --vocab or --pairs")
    out = Path(args.out) if args.out else Path("runs") / f"{Path(file).stem}-{args.task}"
    config = SearchConfig(template_file=file, template=name, task=task,
                          dims=parse_dims(args.dims), picks=parse_picks(args.pick),
                          variants=variants, limit=args.limit, sample=args.sample,
                          seeds=args.seeds, budget=args.budget, layers=args.layers, lr=args.lr,
                          out=out, db=Path(args.db) if args.db else None,
                          executor=args.executor, workers=args.workers, threads=args.threads,
                          address=args.address, progress=not args.no_progress,
                          positions=args.positions)
    if args.task == "lm":  # a bad corpus is reported before any training
        from .search.corpus import load_corpus
        load_corpus(args.corpus)
    outcome = run_search(config)
    print(outcome.markdown, end="")
    print(f"results in {outcome.out}/ (leaderboard.md, .csv, .json, loss_curves.png, "
          f"metric.png); {outcome.seconds:.1f} s", file=sys.stderr)
    return 0


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _non_negative_int(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected 0 or a positive integer, got {text!r}")
    return int(text)


def _finite_positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite positive number, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anatomy", description="A compiler for attention mechanisms written as diagrams.")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"anatomy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check", help="parse and type-check .anat files")
    p.add_argument("files", nargs="+", help=".anat files or directories of them, zoo names "
                                            "(ssd), or - for standard input")
    p.add_argument("--dims", help="override dims, e.g. d=512,h=8")
    p.set_defaults(func=cmd_check)
    p = sub.add_parser("compile", help="compile anatomies to PyTorch modules")
    p.add_argument("files", nargs="+", help=".anat files or directories of them, zoo names "
                                            "(ssd), or - for standard input")
    p.add_argument("--name", help="the anatomy to compile (default: every one in the file)")
    p.add_argument("--dims", help="override dims, e.g. d=512,h=8")
    p.add_argument("--form", default="auto", choices=["auto", "parallel", "chunked"],
                   help="execution form (default: auto)")
    p.add_argument("--print-code", action="store_true", help="print the generated code")
    p.add_argument("--run", action="store_true", help="run once on random inputs")
    p.add_argument("--seq", type=_positive_int, default=16, help="sequence length for --run")
    p.add_argument("--memory-limit", metavar="SIZE",
                   help="refuse modules (and --run activations) past this, e.g. 8G "
                        "(default: $ANATOMY_MEMORY_LIMIT, else the memory available)")
    p.set_defaults(func=cmd_compile)
    p = sub.add_parser("prove", help="prove two anatomies equal by rewriting (or refuse)")
    p.add_argument("left", help="FILE:NAME")
    p.add_argument("right", help="FILE:NAME")
    p.add_argument("--dims", help="override dims of both sides, e.g. g=1")
    p.add_argument("--allow-approximate", action="store_true",
                   help="also use approximate (model-changing) rules; flagged in the proof")
    p.add_argument("--json", help="write the proof as JSON (replay: anatomy verify-proof)")
    p.add_argument("--brief", action="store_true", help="steps only, without the diagrams")
    p.add_argument("--svg", metavar="DIR",
                   help="also draw the proof: one SVG per step and DIR/index.html")
    p.set_defaults(func=cmd_prove)
    p = sub.add_parser("verify-proof", help="replay and re-check a JSON proof")
    p.add_argument("proof", help="a proof written by `anatomy prove --json`")
    p.add_argument("--allow-unpinned", action="store_true",
                   help="replay a side whose file the proof does not pin by a sha256")
    p.set_defaults(func=cmd_verify_proof)
    p = sub.add_parser("rules", help="the rewrite rules (--certify: check each one)")
    p.add_argument("--certify", action="store_true",
                   help="certify every rule on its witnesses (sympy and numeric)")
    p.set_defaults(func=cmd_rules)
    p = sub.add_parser("zoo", help="list the zoo: one line per file and the paper it follows")
    p.add_argument("--markdown", action="store_true",
                   help="print docs/zoo.md (generated from the files' headers)")
    p.add_argument("--paths", action="store_true",
                   help="one line per zoo anatomy: its name (anatomy check NAME) and file")
    p.set_defaults(func=cmd_zoo)
    p = sub.add_parser("enumerate", help="list the type-correct fillings of a template, "
                                          "grouped by canonical form")
    p.add_argument("template", help="FILE or FILE:NAME of a template with slot boxes")
    p.add_argument("--dims", help="override dims, e.g. d=64,h=4")
    p.add_argument("--pick", action="append", metavar="SLOT=FILLER[,FILLER...]",
                   help="only these fillers for a slot (repeatable)")
    p.add_argument("--workers", type=_positive_int, default=None,
                   help="processes (default: one per core for large spaces)")
    p.add_argument("--quiet", action="store_true", help="print the summary only")
    p.set_defaults(func=cmd_enumerate)
    p = sub.add_parser("search", help="train the variants of a template on a task and rank "
                                       "them (resumable)")
    p.add_argument("template", help="FILE or FILE:NAME of a template with slot boxes")
    p.add_argument("--task", required=True, choices=["mqar", "mqar_interleaved", "lm"],
                   help="mqar: multi-query associative recall (Zoology's layout); "
                        "mqar_interleaved: the first, leaky layout; lm: byte-level language model")
    p.add_argument("--seeds", type=_positive_int, default=1, help="seeds per variant")
    p.add_argument("--budget", type=parse_tokens, default=200_000,
                   help="training tokens per trial, e.g. 300k or 1M (default 200k)")
    p.add_argument("--dims", help="override the template's dims, e.g. d=32,h=4")
    p.add_argument("--pick", action="append", metavar="SLOT=FILLER[,FILLER...]",
                   help="only these fillers for a slot (repeatable)")
    p.add_argument("--variant", action="append", metavar="FILLERS",
                   help="train this filling: one filler per slot in slot order, or "
                        "slot=filler pairs (repeatable)")
    p.add_argument("--variants", metavar="FILE", help="fillings to train, one per line")
    p.add_argument("--limit", type=_positive_int, help="only the first N variants")
    p.add_argument("--sample", type=_positive_int, help="N variants drawn at random (seed 0)")
    p.add_argument("--layers", type=_positive_int, default=2, help="blocks (default 2)")
    p.add_argument("--lr", type=_finite_positive_float, default=3e-3,
                   help="AdamW peak learning rate")
    p.add_argument("--seq-len", type=_positive_int, default=64, help="tokens per sequence")
    p.add_argument("--batch", type=_positive_int, default=32, help="sequences per step")
    p.add_argument("--vocab", type=_positive_int, default=8192,
                   help="MQAR vocabulary size (default 8192, as Zoology)")
    p.add_argument("--pairs", type=_positive_int, default=None,
                   help="MQAR key-value pairs (default: seq-len / 16, as Zoology)")
    p.add_argument("--positions", default="learned", choices=["none", "learned", "rope"],
                   help="positional information: learned absolute (default), rotary on the "
                        "queries and keys of a `similarity` slot, or none")
    p.add_argument("--corpus", help="lm: a text file (default: the pinned stdlib corpus)")
    p.add_argument("--out", help="results folder (default runs/TEMPLATE-TASK)")
    p.add_argument("--db", help="the search database (default OUT/search.db)")
    p.add_argument("--executor", default="local", choices=["local", "ray"],
                   help="local worker processes (default) or a Ray cluster")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--workers", type=_non_negative_int, default=None,
                   help="local worker processes (default: cores / threads; 0: in this process)")
    p.add_argument("--threads", type=_positive_int, default=1, help="torch threads per trial")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_search)
    p = sub.add_parser("print", help="print a program (or FILE:NAME) as canonical .anat text")
    p.add_argument("target", help="FILE or FILE:NAME, a zoo name, or - for standard input")
    p.set_defaults(func=cmd_print)
    p = sub.add_parser("render", help="draw FILE[:NAME] as an SVG string diagram, or a "
                                      "directory of .anat files as a gallery")
    p.add_argument("target", help="FILE, FILE:NAME, a zoo name, - for standard input, or a "
                                  "directory (gallery)")
    p.add_argument("-o", "--output", help="output file (default: stdout); for a directory, "
                                          "the gallery's folder")
    p.add_argument("--depth", type=_positive_int, default=1,
                   help="levels of composite boxes drawn: 1 (default) shows them collapsed, "
                        "2 expands each once, ...")
    p.add_argument("--format", default="svg", choices=["svg", "dot"],
                   help="svg (default; needs graphviz) or the DOT source")
    p.add_argument("--dims", help="override dims, e.g. d=512,h=8")
    p.set_defaults(func=cmd_render)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except AnatError as e:
        print(e.render(), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as e:  # a file the command had to read or write (named by the error)
        where = f" {e.filename}" if e.filename else ""
        print(AnatError(f"cannot use{where}: {e.strerror or e}",
                        hint="check that the path exists and that you may read (or write) "
                             "it; choose another with the command's options").render(),
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
