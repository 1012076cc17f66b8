"""The `anatomy` command line: check (and print) .anat programs.

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anatomy", description="A compiler for attention mechanisms written as diagrams.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check", help="parse and type-check .anat files")
    p.add_argument("files", nargs="+", help=".anat files or directories of them")
    p.add_argument("--dims", help="override dims, e.g. d=512,h=8")
    p.set_defaults(func=cmd_check)
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
