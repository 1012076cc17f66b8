"""Text for character-level language modelling: a default corpus assembled from the Python
standard library's own sources (present wherever Python is), pinned by a sha256 hash, or
the user's text file.

The default corpus is the files in `STDLIB_FILES`, in that order, each preceded by a line
`# ==== <name>`, encoded as UTF-8. The standard library changes between Python versions, so
the hash is pinned per version; a different text is refused (never trained on silently).
"""

from __future__ import annotations

import hashlib
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from anatomy.errors import AnatError

STDLIB_FILES = (
    "bisect.py", "calendar.py", "colorsys.py", "contextlib.py", "copy.py", "csv.py",
    "fnmatch.py", "fractions.py", "functools.py", "glob.py", "heapq.py", "json/decoder.py",
    "json/encoder.py", "numbers.py", "operator.py", "pprint.py", "queue.py", "random.py",
    "sched.py", "shlex.py", "string.py", "textwrap.py", "this.py", "weakref.py",
)
# sha256 of the assembled default corpus, by Python version (major.minor)
PINNED = {
    "3.11": "c0264e8b76fe64eb1b97a504b13419d08b6d27cbf12ac2d255b4218ea8e028d2",  # 3.11.7
}
HELD_OUT = 0.1  # the last tenth of the text is the evaluation split


@dataclass(frozen=True)
class Corpus:
    """A text as bytes (the vocabulary is the 256 byte values), split for training and
    evaluation: the first 90% and the last 10%."""

    name: str
    data: bytes
    sha256: str

    @property
    def train(self) -> bytes:
        return self.data[:self._cut]

    @property
    def held_out(self) -> bytes:
        return self.data[self._cut:]

    @property
    def _cut(self) -> int:
        return int(len(self.data) * (1 - HELD_OUT))


def default_corpus_text() -> bytes:
    """The default corpus, assembled from this interpreter's standard library."""
    root = Path(sysconfig.get_paths()["stdlib"])
    parts = []
    for name in STDLIB_FILES:
        path = root / name
        try:
            parts.append(f"# ==== {name}\n".encode() + path.read_bytes())
        except OSError as e:
            raise AnatError(f"the default corpus needs {path}, which cannot be read: {e}",
                            hint="pass --corpus PATH with a text file of your own") from None
    return b"".join(parts)


def load_corpus(path: str | Path | None = None) -> Corpus:
    """The user's text file, or (path None) the pinned default corpus."""
    if path is not None:
        p = Path(path)
        try:
            data = p.read_bytes()
        except OSError as e:
            raise AnatError(f"cannot read the corpus {p}: {e}") from None
        if len(data) < 1000:
            raise AnatError(f"the corpus {p} has {len(data)} bytes: too little to train and "
                            f"evaluate on", hint="give at least a few kilobytes of text")
        return Corpus(p.name, data, hashlib.sha256(data).hexdigest())
    data = default_corpus_text()
    digest = hashlib.sha256(data).hexdigest()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    want = PINNED.get(version)
    if digest != want:
        known = ", ".join(sorted(PINNED))
        raise AnatError(
            f"the default corpus (the Python {version} standard library files "
            f"{STDLIB_FILES[0]} ... {STDLIB_FILES[-1]}) has sha256 {digest[:16]}..., but the "
            f"pinned hash is {want[:16] + '...' if want else 'unknown for this version'}",
            hint=f"the default corpus is pinned for Python {known}; on another Python, pass "
                 "--corpus PATH with a text file (e.g. those sources concatenated)")
    return Corpus(f"python{version}-stdlib", data, digest)
