"""Writing rendered files: an unwritable place is the user's error, not a traceback."""

from __future__ import annotations

from pathlib import Path

from ..errors import AnatError


def write_text(path: Path, text: str) -> None:
    """Write `text` to `path`, creating its folder."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as e:
        raise AnatError(f"cannot write {path}: {e.strerror or e}",
                        hint="choose an output path in a writable folder") from None
