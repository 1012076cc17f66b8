"""The layers do not import each other in a cycle, function-level imports included
(issue 21): core (IR, ops, shapes, printer, loader, structure hash) <- rewrite <- lowering
<- verify, with render, search and the command line above (scripts/import_graph.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts/import_graph.py")
import_graph = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(import_graph)


def test_no_cycle_between_layers():
    _, layers = import_graph.graphs(ROOT)
    cycles = import_graph.cycles(layers)
    detail = {f"{a} -> {b}": d["pairs"] for a, b, d in layers.edges(data=True)}
    assert not cycles, f"layer cycles {cycles}; edges {detail}"


def test_core_imports_no_layer_above_it():
    _, layers = import_graph.graphs(ROOT)
    above = [(b, layers.edges["core", b]["pairs"]) for b in layers.successors("core")]
    assert not above, above


def test_every_module_is_in_a_layer():
    """A new package folder gets a layer of its own, not the top one by default."""
    g, _ = import_graph.graphs(ROOT)
    app = [m for m in g if import_graph.layer_of(m) == "app"]
    assert set(app) <= {"anatomy", "anatomy.cli", "anatomy.__main__", "anatomy.views",
                        "anatomy.zoo"}, app
