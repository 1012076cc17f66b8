"""The JSON proof file (`anatomy prove --json`, `anatomy verify-proof`): its schema, reading
it without trusting it, and where the files it names are.

A proof file is validated against `SCHEMA` (JSON Schema, checked by the `jsonschema`
library) before anything in it is used, so a missing key, a null or a wrong type is an
AnatError naming the place in the file, never a KeyError or TypeError. The two sides' files
are stored relative to the proof file and resolved from it, so a proof moves with its
sources; each is pinned by its sha256, and a file that is missing and a file that changed
are told apart.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import jsonschema

from anatomy.errors import AnatError

FORMAT = "anatomy-proof/1"

_SCALAR = {"type": ["string", "integer", "number", "boolean", "null"]}
_HASH = {"type": "string", "pattern": "^[0-9a-f]{24}$"}
_SIDE = {
    "type": "object",
    "required": ["file", "name", "dims", "sha256", "text"],
    "properties": {
        "file": {"type": "string", "minLength": 1},
        "name": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
        "dims": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 1}},
        "sha256": {"oneOf": [{"type": "string", "pattern": "^[0-9a-f]{64}$"}, {"type": "null"}]},
        "text": {"type": "string"},
    },
    "additionalProperties": False,
}
_STEP = {
    "type": "object",
    "required": ["rule", "box", "params", "kind", "statement", "hash", "text"],
    "properties": {
        "rule": {"type": "string"},
        "box": {"type": "string"},
        "params": {"type": "array", "items": {"anyOf": [_SCALAR, {  # the rule's choice
            "type": "array", "items": _SCALAR}]}},
        "kind": {"enum": ["exact", "approximate"]},
        "statement": {"type": "string"},
        "hash": _HASH,
        "text": {"type": "string"},
    },
    "additionalProperties": False,
}
SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "anatomy proof",
    "type": "object",
    "required": ["format", "approximate", "left", "right", "left_steps", "right_steps", "meet"],
    "properties": {
        "format": {"const": FORMAT},
        "approximate": {"type": "boolean"},
        "left": _SIDE,
        "right": _SIDE,
        "left_steps": {"type": "array", "items": _STEP, "maxItems": 10_000},
        "right_steps": {"type": "array", "items": _STEP, "maxItems": 10_000},
        "meet": _HASH,
    },
    "additionalProperties": False,
}
MAX_BYTES = 64 * 2**20


def read(path: str | Path) -> dict[str, Any]:
    """The proof file's content, checked against `SCHEMA` (AnatError otherwise)."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_BYTES:
            raise AnatError(f"{path} is larger than a proof may be ({MAX_BYTES // 2**20} MB)")
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise AnatError(f"no such proof file: {path}",
                        hint="write one with anatomy prove A B --json FILE") from None
    except (OSError, UnicodeDecodeError) as e:
        raise AnatError(f"cannot read proof {path}: {e}") from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise AnatError(f"{path} is not JSON: {e}",
                        hint="proofs are written by anatomy prove --json") from None
    except RecursionError:
        raise AnatError(f"{path} nests its JSON too deeply to be a proof") from None
    errors = sorted(jsonschema.Draft202012Validator(SCHEMA).iter_errors(data),
                    key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        e = errors[0]
        where = "/".join(map(str, e.absolute_path)) or "the top level"
        raise AnatError(f"{path} is not an anatomy proof ({FORMAT}): at {where}: "
                        f"{_short(e.message)}",
                        hint="proofs are written by anatomy prove --json; an edited proof "
                             "must still follow its format")
    return data


def stored_path(proof: str | Path, file: str | Path) -> str:
    """How a side's file is written in a proof saved at `proof`: relative to its folder."""
    here = Path(proof).resolve().parent
    return Path(os.path.relpath(Path(file).resolve(), here)).as_posix()


def locate(proof: str | Path, side: str, info: dict[str, Any], allow_unpinned: bool) -> Path:
    """The side's file, resolved from the proof file's folder; refused (AnatError) when it
    is missing, or unpinned without `allow_unpinned`."""
    file = Path(proof).resolve().parent / info["file"]
    if not file.is_file():
        raise AnatError(f"{proof}: the {side} side's file {info['file']} is missing "
                        f"(looked for {file})",
                        hint="paths in a proof are relative to the proof file: keep the proof "
                             "beside its sources, or prove again")
    if info["sha256"] is None and not allow_unpinned:
        raise AnatError(f"{proof}: the {side} side's file {info['file']} is not pinned by a "
                        "sha256, so a changed file could not be told",
                        hint="prove again to pin it, or pass --allow-unpinned to replay it "
                             "against the file as it is now")
    return file


def changed(file: Path, info: dict[str, Any]) -> bool:
    """Whether the file differs from the one the proof pinned (never, when unpinned)."""
    return info["sha256"] is not None and sha256(file) != info["sha256"]


def sha256(file: str | Path) -> str:
    return hashlib.sha256(Path(file).read_bytes()).hexdigest()


def _short(message: str, limit: int = 200) -> str:
    return message if len(message) <= limit else message[:limit] + "…"
