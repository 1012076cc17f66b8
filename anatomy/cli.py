"""The `anatomy` command line: check, print and compile .anat programs, list the zoo.

Errors in user input print as `file:line:col: error: ...` with the line and a caret, and
exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .errors import AnatError
from .program import load


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


def expand(paths: list[str]) -> list[Path]:
    """Files named on the command line; a directory means every .anat file in it."""
    out: list[Path] = []
    for p in paths:
        path = Path(p)
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
        program = load(path, strict_dims=False, **dims)
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
    program = load(file)
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
        program = load(path, strict_dims=False, **dims)
        names = [args.name] if args.name else list(program.own)
        for name in names:
            d = program[name]
            own = {k: v for k, v in dims.items() if k in d.dims}
            start = time.perf_counter()
            module = compile_anatomy(d, form=args.form, **own)
            ms = (time.perf_counter() - start) * 1e3
            line = f"{path.name}:{name}  compiled in {ms:.1f} ms ({args.form})"
            if args.run:
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


def cmd_zoo(args) -> int:
    """The zoo's catalogue: one line per file (its paper), or docs/zoo.md with --markdown."""
    from .catalog import zoo_markdown, zoo_text
    print(zoo_markdown() if args.markdown else zoo_text(), end="")
    return 0


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anatomy", description="A compiler for attention mechanisms written as diagrams.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check", help="parse and type-check .anat files")
    p.add_argument("files", nargs="+", help=".anat files or directories of them")
    p.add_argument("--dims", help="override dims, e.g. d=512,h=8")
    p.set_defaults(func=cmd_check)
    p = sub.add_parser("compile", help="compile anatomies to PyTorch modules")
    p.add_argument("files", nargs="+", help=".anat files or directories of them")
    p.add_argument("--name", help="the anatomy to compile (default: every one in the file)")
    p.add_argument("--dims", help="override dims, e.g. d=512,h=8")
    p.add_argument("--form", default="auto", choices=["auto", "parallel", "chunked"],
                   help="execution form (default: auto)")
    p.add_argument("--print-code", action="store_true", help="print the generated code")
    p.add_argument("--run", action="store_true", help="run once on random inputs")
    p.add_argument("--seq", type=_positive_int, default=16, help="sequence length for --run")
    p.set_defaults(func=cmd_compile)
    p = sub.add_parser("zoo", help="list the zoo: one line per file and the paper it follows")
    p.add_argument("--markdown", action="store_true",
                   help="print docs/zoo.md (generated from the files' headers)")
    p.set_defaults(func=cmd_zoo)
    p = sub.add_parser("print", help="print a program (or FILE:NAME) as canonical .anat text")
    p.add_argument("target", help="FILE or FILE:NAME")
    p.set_defaults(func=cmd_print)
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


if __name__ == "__main__":
    sys.exit(main())
