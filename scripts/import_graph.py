"""The import graph of the package, function-level imports included, and its cycles.

Reads every .py file of the package folders (anatomy/, grammar/, lowering/, kernels/, zoo/,
mapped to their module names as pyproject's package-dir does) with `ast`, and records an
edge A -> B for every `import` / `from ... import` anywhere in A (at module level or inside
a function) that names a module B of the package. Modules are grouped into layers
(`LAYERS`); the report lists the strongly connected components of the module graph and of
the layer graph. tests/test_architecture.py asserts that the layer graph has no cycle.

Run: python scripts/import_graph.py [--longest 15] [--json OUT]
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent
# folder -> package name (pyproject.toml's package-dir)
PACKAGE_DIRS = {"anatomy": "anatomy", "grammar": "anatomy.grammar",
                "lowering": "anatomy.lowering", "kernels": "anatomy.kernels",
                "zoo": "anatomy.zoo"}
# layer -> module-name prefixes, lowest layer first; a module belongs to the layer of its
# longest matching prefix
LAYERS = {
    "core": ("anatomy.ir", "anatomy.ops", "anatomy.dims", "anatomy.errors", "anatomy.shapes",
             "anatomy.program", "anatomy.printer", "anatomy.canonical", "anatomy.causality",
             "anatomy.catalog", "anatomy.grammar"),
    "rewrite": ("anatomy.rewrite",),
    "kernels": ("anatomy.kernels",),
    "lowering": ("anatomy.lowering",),
    "verify": ("anatomy.verify",),
    "render": ("anatomy.render",),
    "search": ("anatomy.search",),
    "app": ("anatomy", "anatomy.cli", "anatomy.__main__", "anatomy.views", "anatomy.zoo"),
}


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Module name -> file, for every .py file of the package folders."""
    out = {}
    for folder, package in PACKAGE_DIRS.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = list(path.relative_to(root / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The longest known module that `name` is or lies in."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that `module` imports anywhere in its file."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # `from pkg import sub` imports the submodule when there is one
            names = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in known else stem
                     for a in node.names]
        else:
            continue
        for n in names:
            target = _resolve(n, known)
            if target is not None and target != module:
                out.add(target)
    return out


def layer_of(module: str) -> str:
    best, layer = -1, "app"
    for name, prefixes in LAYERS.items():
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, layer = len(p), name
    return layer


def graphs(root: Path = ROOT) -> tuple[nx.DiGraph, nx.DiGraph]:
    """The module graph and the layer graph (edges carry the module pairs behind them)."""
    known = modules(root)
    g = nx.DiGraph()
    g.add_nodes_from(known)
    for m, path in known.items():
        for t in imports(m, path, known):
            g.add_edge(m, t)
    layers = nx.DiGraph()
    layers.add_nodes_from(LAYERS)
    for a, b in g.edges:
        la, lb = layer_of(a), layer_of(b)
        if la != lb:
            if not layers.has_edge(la, lb):
                layers.add_edge(la, lb, pairs=[])
            layers.edges[la, lb]["pairs"].append((a, b))
    return g, layers


def cycles(g: nx.DiGraph) -> list[list[str]]:
    """The strongly connected components with more than one node, largest first."""
    return sorted((sorted(c) for c in nx.strongly_connected_components(g) if len(c) > 1),
                  key=len, reverse=True)


def longest_functions(root: Path = ROOT, n: int = 15) -> list[tuple[int, str]]:
    """The n longest functions and methods: (lines, module:qualified name)."""
    found = []
    for module, path in modules(root).items():
        tree = ast.parse(path.read_text(), str(path))

        def visit(node, prefix, module=module):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    name = f"{prefix}{child.name}"
                    found.append((child.end_lineno - child.lineno + 1, f"{module}:{name}"))
                    visit(child, name + ".", module)
                elif isinstance(child, ast.ClassDef):
                    visit(child, f"{prefix}{child.name}.", module)
        visit(tree, "")
    return sorted(found, reverse=True)[:n]


def report(root: Path = ROOT, longest: int = 15) -> dict:
    g, layers = graphs(root)
    layer_cycles = cycles(layers)
    return {
        "modules": g.number_of_nodes(),
        "module_edges": g.number_of_edges(),
        "module_cycles": cycles(g),
        "layer_edges": {f"{a} -> {b}": sorted(f"{x} -> {y}" for x, y in d["pairs"])
                        for a, b, d in sorted(layers.edges(data=True))},
        "layer_cycles": layer_cycles,
        "longest_functions": longest_functions(root, longest),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--longest", type=int, default=15)
    ap.add_argument("--json", help="also write the report as JSON here")
    args = ap.parse_args(argv)
    r = report(longest=args.longest)
    print(f"{r['modules']} modules, {r['module_edges']} import edges (function-level "
          "imports included)")
    print(f"module cycles (SCCs): {len(r['module_cycles'])}")
    for c in r["module_cycles"]:
        print("  " + ", ".join(c))
    print("layer edges:")
    for edge, pairs in r["layer_edges"].items():
        print(f"  {edge}  ({len(pairs)}: {', '.join(pairs[:4])}{' ...' if len(pairs) > 4 else ''})")
    print(f"layer cycles (SCCs): {len(r['layer_cycles'])}")
    for c in r["layer_cycles"]:
        print("  " + ", ".join(c))
    print("longest functions (lines):")
    for n, name in r["longest_functions"]:
        print(f"  {n:4d}  {name}")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
