"""Loading .anat programs: files, `use` of other files (cycles refused), and checking.

`load(path_or_text)` returns a checked `Program`; its anatomies are looked up by name.
"""

from __future__ import annotations

from pathlib import Path

from anatomy.grammar.builder import AnatomyBuilder, Context, parse_signature
from anatomy.grammar.syntax import AnatomyDecl, SlotDecl, UseDecl, read

from .errors import AnatError, SourceLoc, did_you_mean
from .ir import Diagram, Program, Signature

ZOO_DIR = Path(__file__).resolve().parent.parent / "zoo"


def zoo_dir() -> Path:
    """Where the zoo's .anat files are (the installed package data, or the source tree)."""
    from importlib.util import find_spec
    # find_spec, not importlib.resources.files: importing the subpackage `anatomy.zoo` would
    # replace the function `anatomy.zoo()` with the module of the same name
    spec = find_spec("anatomy.zoo")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return ZOO_DIR  # pragma: no cover


def zoo_names() -> dict[str, Path]:
    """Every anatomy of the zoo by name, with the file that defines it (a file's own name
    first: `mla` is mla.anat's `mla`; the search templates under zoo/search are not named)."""
    names: dict[str, Path] = {}
    for path in sorted(zoo_dir().glob("*.anat")):
        names.setdefault(path.stem, path)
        for line in path.read_text().splitlines():
            if line.startswith("anatomy "):
                names.setdefault(line[len("anatomy "):].split("(")[0].strip(), path)
    return names


def resolve_zoo(source: str | Path) -> tuple[Path, str | None] | None:
    """What a name that is not a file here means in the zoo: (file, anatomy or None).

    `ssd` (an anatomy or a file of the zoo), `ssd.anat`, or a path into a clone's zoo
    (`zoo/ssd.anat`, `zoo/search/attention.anat`) that is read from the installed zoo where
    there is no clone. None when the name means nothing there.
    """
    text = str(source)
    try:
        return _resolve_zoo(text)
    except OSError:  # not a name the file system can take (e.g. too long): source text
        return None


def _resolve_zoo(text: str) -> tuple[Path, str | None] | None:
    if "\n" in text or Path(text).exists():
        return None
    if text.isidentifier() and text != "zoo":
        path = zoo_names().get(text)
        if path is None:
            return None
        return path, text if f"anatomy {text}(" in path.read_text() else None
    parts = Path(text).parts
    inside = parts[1:] if parts[:1] == ("zoo",) else parts
    candidate = zoo_dir().joinpath(*inside) if inside else zoo_dir()
    if text.endswith(".anat") and candidate.is_file():
        return candidate, None
    return (candidate, None) if parts[:1] == ("zoo",) and candidate.exists() else None


def load(source: str | Path, *, strict_dims: bool = True, **dims: int) -> Program:
    """Load a program from a path to a .anat file, from .anat source text, or from the zoo
    by name (`load("ssd")`, or `"zoo/ssd.anat"` outside a clone: `resolve_zoo`).

    `dims` override the declared dims of every anatomy that declares them; each anatomy is
    type-checked at those dims before `load` returns. With `strict_dims` (the default) a
    dim that no anatomy of the file declares is an error.
    """
    zoo = resolve_zoo(source)
    if zoo is not None:
        source = zoo[0]
    elif str(source).isidentifier():
        if not Path(source).is_file():
            raise AnatError(f"no file and no zoo anatomy named `{source}`",
                            SourceLoc(source, 0, 0),
                            hint=f"{did_you_mean(str(source), list(zoo_names()), 'zoo anatomy')} "
                                 "(or give a path to a .anat file, or .anat source text)")
        source = Path(source)
    if isinstance(source, Path) or ("\n" not in source and source.endswith(".anat")):
        path = Path(source)
        if not path.exists():
            raise AnatError(f"no such file: {path}", SourceLoc(str(path), 0, 0),
                            hint="give a path to a .anat file, or .anat source text")
        program = _Loader().load_file(path.resolve(), display=str(source), stack=())
    else:
        return load_text(source, "<string>", strict_dims=strict_dims, **dims)
    from .shapes import check_program
    check_program(program, dims, strict=strict_dims)
    return program


def load_text(text: str, file: str = "<string>", *, strict_dims: bool = True,
              **dims: int) -> Program:
    """Load a program from .anat source text, its errors located in `file` (e.g. <stdin>);
    its `use`s are relative to the working directory."""
    program = _Loader().load_text(text, file, Path.cwd(), stack=())
    from .shapes import check_program
    check_program(program, dims, strict=strict_dims)
    return program


class _Loader:
    def __init__(self):
        self.done: dict[Path, Program] = {}

    def load_file(self, path: Path, display: str, stack: tuple[Path, ...]) -> Program:
        if path in self.done:
            return self.done[path]
        try:
            text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is not text
        except (OSError, UnicodeDecodeError) as e:
            raise AnatError(f"cannot read {display}: {e}", SourceLoc(display, 0, 0)) from None
        program = self.load_text(text, display, path.parent, stack + (path,))
        self.done[path] = program
        return program

    def load_text(self, text: str, file: str, base: Path, stack: tuple[Path, ...]) -> Program:
        source = read(text, file)
        anatomies: dict[str, Diagram] = {}
        slots: dict[str, Signature] = {}
        slot_locs: dict[str, SourceLoc] = {}
        origin: dict[str, SourceLoc] = {}

        def add(table: dict, name: str, value, loc: SourceLoc) -> None:
            if name in anatomies or name in slots:
                raise AnatError(f"`{name}` is defined twice", loc,
                                related=[(origin[name], "first defined here")])
            table[name] = value
            origin[name] = loc

        ctx_stub = Context(source, {}, {})
        for item in source.of(UseDecl):
            loc = source.loc(item)
            target = self._resolve_use(item.path, base, loc)
            if target in stack:
                chain = " -> ".join(p.name for p in stack + (target,))
                raise AnatError(f"`use` cycle: {chain}", loc,
                                hint="a file may not use itself, directly or indirectly")
            used = self.load_file(target, str(target), stack)
            for d in used.anatomies.values():
                add(anatomies, d.name, d, loc)
            for name, sig in used.slots.items():
                add(slots, name, sig, loc)
                slot_locs[name] = used.slot_locs.get(name, loc)
        signatures = {n: d.signature for n, d in anatomies.items()}
        for item in source.items:
            loc = source.loc(item)
            if isinstance(item, SlotDecl):
                add(slots, item.name, parse_signature(ctx_stub, item.signature), loc)
                slot_locs[item.name] = loc
            elif isinstance(item, AnatomyDecl):
                if item.name in signatures or item.name in slots:
                    raise AnatError(f"`{item.name}` is defined twice", loc,
                                    related=[(origin[item.name], "first defined here")])
                signatures[item.name] = parse_signature(ctx_stub, item.signature)
                origin[item.name] = loc
        ctx = Context(source, signatures, slots)
        own = []
        for item in source.of(AnatomyDecl):
            diagram = AnatomyBuilder(ctx, item).build()
            anatomies[diagram.name] = diagram
            own.append(diagram.name)
        program = Program(anatomies, slots, file, slot_locs, tuple(own))  # binds its own
        return program

    def _resolve_use(self, rel: str, base: Path, loc: SourceLoc) -> Path:
        for root in (base, zoo_dir()):
            candidate = (root / rel).resolve()
            if candidate.is_file():
                return candidate
        known = [p.name for p in zoo_dir().glob("*.anat")]
        raise AnatError(f"cannot find `{rel}` to use", loc,
                        hint=f"paths are relative to this file or to the zoo; "
                             f"{did_you_mean(rel, known, 'zoo file')}")


def file_header(text: str) -> str:
    """The comment block at the top of a file (the paper it follows)."""
    out = []
    for line in text.splitlines():
        if line.strip().startswith("#"):
            out.append(line.strip().lstrip("#").strip())
        elif out or line.strip():
            break
    return "\n".join(out).strip()
