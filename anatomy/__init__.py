"""anatomy: a compiler for attention mechanisms written as string diagrams (.anat files).

`anatomy.load(path_or_text)` parses and type-checks a program; its anatomies are looked up
by name and are `Diagram`s (the typed IR every other part of the tool reads).
"""

from . import canonical as _structure  # noqa: F401  (loaded before `canonical` below is bound)
from . import views  # noqa: F401  (Diagram.to_text, to_svg, check, str: anatomy/views.py)
from .errors import AnatError, SourceLoc
from .ir import Box, Diagram, Port, Program, Signature, Use, Wire
from .program import load, zoo_dir
from .shapes import Shapes, check

__version__ = "0.1.0"

__all__ = [
    "AnatError",
    "Box",
    "Diagram",
    "Port",
    "Program",
    "Shapes",
    "Signature",
    "SourceLoc",
    "Use",
    "Wire",
    "__version__",
    "canonical",
    "check",
    "compile",
    "grow",
    "load",
    "prove",
    "zoo",
    "zoo_dir",
]


def canonical(d: Diagram, normalise: bool = True) -> str:
    """One hash for diagrams equal up to wire renaming, statement order and (with
    `normalise`) the normalising exact rewrite rules (anatomy.rewrite.canonical)."""
    from anatomy.rewrite import canonical as hash_of
    return hash_of(d, normalise)


def __getattr__(name: str):
    # compile and grow import torch: only pay for it when compiling
    if name in ("compile", "grow"):
        from anatomy import lowering
        return getattr(lowering, name)
    if name == "prove":
        from anatomy.verify import prove
        return prove
    raise AttributeError(f"module 'anatomy' has no attribute {name!r}")


def zoo() -> dict[str, Program]:
    """Every zoo file, loaded: {file stem: Program}."""
    return {p.stem: load(p) for p in sorted(zoo_dir().glob("*.anat"))}
