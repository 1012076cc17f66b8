"""Rendering, checked as a person would look at it: the SVG's structure read back (every box,
wire and plate there, with readable labels that do not overlap, boxes inside the plates of
the axes they are computed for), determinism, depth, highlights, the gallery, proof pages,
a headless-browser screenshot, and the errors a user can cause."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import anatomy
from anatomy import AnatError
from anatomy.ops import KINDS
from anatomy.render import changed_boxes, render_gallery, render_proof, to_dot, to_svg
from anatomy.render.browser import chromium, ink, screenshot, svg_size_px
from anatomy.render.style import COLOURS
from tests.svg import Text, overlaps, parse

ZOO = Path(anatomy.zoo_dir())
ENTRIES = [(p, d.name) for p in sorted(ZOO.glob("*.anat")) for d in anatomy.load(p)]


def zoo(stem: str, name: str) -> anatomy.Diagram:
    return anatomy.load(ZOO / f"{stem}.anat")[name]


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "anatomy.cli", *map(str, args)],
                          check=False, capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture(scope="module")
def pictures() -> dict[tuple[str, str], tuple[anatomy.Diagram, str]]:
    out = {}
    for path, name in ENTRIES:
        d = anatomy.load(path)[name]
        out[path.stem, name] = d, to_svg(d)
    return out


def _implicit(d: anatomy.Diagram, box: anatomy.Box) -> bool:
    return box.op == "param" and bool(box.attr("implicit"))


def _scalar_constant(d: anatomy.Diagram, wire: str) -> bool:
    """Written from the conventions (docs/rendering.md), not from the renderer: an anonymous
    scalar computed from numbers and axis sizes only."""
    box = d.producer(wire)
    leaf = box.op in ("const", "size")
    return (d.wires[wire].anonymous and not d.wires[wire].axes
            and box.op not in ("param", "call", "slot") and (leaf or bool(box.inputs))
            and all(_scalar_constant(d, u.wire) for u in box.inputs))


# -- every box, wire and plate is in the picture ------------------------------------------
@pytest.mark.parametrize("stem,name", [(p.stem, n) for p, n in ENTRIES])
def test_every_box_and_wire_is_drawn(pictures, stem, name):
    d, svg = pictures[stem, name]
    pic = parse(svg)
    for box in d.boxes:
        users = d.consumers(box.id)
        if _implicit(d, box):
            (user,) = users  # written inside the box that uses it
            assert box.id in pic.nodes[f"box-{user.id}"].text
        elif _scalar_constant(d, box.id):
            assert f"box-{box.id}" not in pic.nodes
        else:
            assert f"box-{box.id}" in pic.nodes, f"box {box.id} ({box.op}) is not drawn"
    labels = [t.text for t in pic.texts()]
    for wire in d.wires.values():
        producer = d.producer(wire.name)
        if wire.anonymous or (producer is not None and _implicit(d, producer)):
            continue
        assert any(t.startswith(f"{wire.name}[") for t in labels), f"wire {wire.name} unlabelled"
    for port in d.inputs + d.outputs:
        side = "in" if port in d.inputs else "out"
        assert pic.nodes[f"box-{side}-{port.name}"].text.startswith(f"{port.name}[")


@pytest.mark.parametrize("stem,name", [(p.stem, n) for p, n in ENTRIES])
def test_boxes_sit_in_plates_of_axes_they_are_computed_for(pictures, stem, name):
    """A plate of axis a around a box says 'this box is computed for each index of a': so
    its output carries a, it does not act along a, and it does not sum a away."""
    d, svg = pictures[stem, name]
    pic = parse(svg)
    for box in d.boxes:
        if f"box-{box.id}" not in pic.nodes:
            continue
        out_axes = set(d.wires[box.id].axes)
        acted = set(box.attr("along") or ()) | {box.attr("axis")}
        if box.op in ("rope", "xpos"):  # position t rotates x[t] alone: only pairs mix
            acted = set(box.attr("along")[1:])
        if box.op == "linear":
            acted |= set(box.attr("out_axes"))
        for axis in pic.plates_around(f"box-{box.id}"):
            assert axis in out_axes and axis not in acted, \
                f"{name}: box {box.id} ({box.op}) is drawn inside plate {axis}"
    for cluster in pic.clusters.values():
        assert cluster.texts, f"plate {cluster.id} has no label"
        if "plate" in cluster.classes:
            assert re.fullmatch(r"[A-Za-z]\w*( = \d+)?", cluster.texts[0])


# plates around each box, read from the papers' equations: which indices each step is
# computed independently for (t: query/time, s: key, h: head)
EXPECTED_PLATES = {
    ("gqa", "gqa"): {
        "q": {"t"}, "k": {"t"}, "v": {"t"}, "kh": {"t"}, "vh": {"t"},
        "score": {"t", "h", "s"},      # one q.k per head, query and key
        "w": {"t", "h"},               # softmax over s, per head and query
        "o": {"t", "h"},               # sum over s of w v, per head and query
        "y": {"t"}, "_10": set(),      # the causal mask is one constant matrix
    },
    ("ssd", "ssd"): {
        "xs": {"t"}, "z": {"t"}, "b": {"t"}, "c": {"t"}, "_5": {"t"},
        "_6": {"t", "h"}, "dt": {"t", "h"}, "log_a": {"t", "h"}, "xdt": {"t", "h"},
        "_8": {"h"}, "_9": {"h"},      # -exp(A): per head, not per token
        "_10": {"h"},                  # the decay matrix L: per head, over (t, s)
        "mix": {"t", "h"}, "_11": {"t", "h"}, "_12": {"t", "h"}, "_13": {"t", "h"},
        "_14": {"t", "h"},
        "o": {"t"},                    # the norm acts over (h, p) for each token
        "y": {"t"}, "dt_bias": set(), "a_log": set(), "D": set(),
    },
    ("hydra", "hydra"): {
        "yf": set(), "yb": set(),      # composite boxes: their insides are their own
        "mix": {"t", "h"}, "o": {"t", "h"}, "y": {"t"},
    },
}


@pytest.mark.parametrize("entry", sorted(EXPECTED_PLATES))
def test_plates_match_the_papers(pictures, entry):
    _, svg = pictures[entry]
    pic = parse(svg)
    for box_id, axes in EXPECTED_PLATES[entry].items():
        assert pic.plates_around(f"box-{box_id}") == axes, box_id


# -- readable text --------------------------------------------------------------------------
@pytest.mark.parametrize("stem,name", [(p.stem, n) for p, n in ENTRIES])
def test_labels_are_readable_and_do_not_overlap(pictures, stem, name):
    _, svg = pictures[stem, name]
    texts = parse(svg).texts()
    for t in texts:
        assert t.text.strip() and t.size >= 9, t
        assert not re.search(r"(^|\W)_\d+", t.text), f"internal wire name shown: {t.text}"
    assert not overlaps(texts), f"{name}: overlapping labels {overlaps(texts)}"


def test_overlap_check_sees_overlaps():
    texts = [Text("softmax over s", 100, 50, 11, "middle"), Text("w[h, t, s]", 110, 54, 9,
                                                                 "start"),
             Text("far away", 400, 50, 11, "middle")]
    assert overlaps(texts) == [("softmax over s", "w[h, t, s]")]


def test_wire_labels_show_sizes_and_renames(pictures):
    labels = {t.text for t in parse(pictures["gqa", "gqa"][1]).texts()}
    assert "q[t, h=8, n=64]" in labels
    assert "kh[t→s, h=8, n=64]" in labels  # kh is defined on t and used as kh[s, h, n]
    assert "x[t, d=512]" in labels and "y[t, d=512]" in labels
    assert "Σ n × 1 / sqrt(n)" in labels   # the score's scale, folded into its box
    assert "w_q[d, h, n]" in labels        # linear's implicit weight, inside its box


# -- kinds, colours, legend -----------------------------------------------------------------
def test_every_kind_has_a_colour():
    assert set(COLOURS) == set(KINDS)
    assert len(set(COLOURS.values()) - {"#ffffff"}) == len(COLOURS) - 3  # input/arith/slot


def test_legend_lists_the_kinds_drawn(pictures):
    _, svg = pictures["gqa", "gqa"]
    pic = parse(svg)
    legend = [t.text for t in pic.texts() if t.text in
              {"input / output", "projection", "similarity", "mask / decay", "normaliser",
               "mixing", "sharing", "gate", "norm", "parameter", "activation",
               "arithmetic / product"}]
    # GQA: projections, a similarity (q.k), a mask, a normaliser (softmax), a mixing (w v)
    # and KV sharing; nothing else
    assert sorted(legend) == sorted(["input / output", "projection", "similarity",
                                     "mask / decay", "normaliser", "mixing", "sharing"])
    kinds = {box: next(c for c in pic.nodes[f"box-{box}"].classes if c in COLOURS)
             for box in ("q", "score", "w", "o", "kh", "_10")}
    assert kinds == {"q": "projection", "score": "similarity", "w": "normaliser",
                     "o": "mixing", "kh": "sharing", "_10": "mask"}


def test_ssd_components(pictures):
    pic = parse(pictures["ssd", "ssd"][1])
    kind = {box: next(c for c in pic.nodes[f"box-{box}"].classes if c in COLOURS)
            for box in ("mix", "xdt", "_10", "o", "_13", "dt_bias")}
    # (L o C B^T)(dt X) sums over keys: mixing; dt X sums nothing: a product
    assert kind == {"mix": "mixing", "xdt": "arithmetic", "_10": "mask", "o": "norm",
                    "_13": "gate", "dt_bias": "parameter"}


# -- determinism, depth ---------------------------------------------------------------------
def test_same_input_same_bytes():
    code = ("import anatomy, sys; d = anatomy.load(sys.argv[1])['hydra']; "
            "sys.stdout.write(d.to_svg(depth=2))")
    outs = {subprocess.run([sys.executable, "-c", code, ZOO / "hydra.anat"], check=True,
                           capture_output=True, text=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout
            for seed in ("1", "2", "3")}
    assert len(outs) == 1
    assert outs == {to_svg(zoo("hydra", "hydra"), depth=2)}


def test_depth_expands_composite_boxes():
    d = zoo("hydra", "hydra")
    flat, deep = parse(to_svg(d)), parse(to_svg(d, depth=2))
    assert {"box-yf", "box-yb"} <= set(flat.nodes)
    assert "composite" in flat.nodes["box-yf"].classes
    assert not any("composite" in c.classes for c in flat.clusters.values())
    assert {"composite-yf", "composite-yb"} <= set(deep.clusters)
    assert "box-yf" not in deep.nodes
    # ss's own boxes (its one contraction and its decay), drawn inside each expansion
    for call in ("yf", "yb"):
        inner = {n for n in deep.nodes if n.startswith(f"box-{call}.")}
        assert {f"box-{call}.y", f"box-{call}.in-c", f"box-{call}.out-y"} <= inner
        for node in inner:
            assert deep.nodes[node].inside(deep.clusters[f"composite-{call}"])
    # ss uses no composite boxes: a deeper depth draws the same picture
    assert to_svg(d, depth=3) == to_svg(d, depth=2)


def test_diagram_methods_delegate():
    d = zoo("gqa", "gqa")
    assert d.to_svg() == d._repr_svg_() == to_svg(d)
    assert d.to_svg().lstrip().startswith("<?xml")


# -- proofs -----------------------------------------------------------------------------------
def test_proof_pages(tmp_path):
    mha, gqa = zoo("mha", "mha"), zoo("gqa", "gqa")
    steps = [(mha, set(), "start", "", "exact"),
             (gqa, {"kh", "vh"}, "share-kv", "k[t, h, n] = share(k[t, g, n], g, h)", "exact"),
             (gqa, {"w_q", "score"}, "scale", "q k / sqrt(n) with q scaled", "approximate")]
    index = render_proof(steps, tmp_path / "proof")
    assert sorted(p.name for p in index.parent.iterdir()) == \
        ["index.html", "step-00.svg", "step-01.svg", "step-02.svg"]
    for n, (_, highlight, *_) in enumerate(steps):
        pic = parse((index.parent / f"step-{n:02d}.svg").read_text())
        marked = {i.removeprefix("box-") for i, s in pic.nodes.items()
                  if "highlight" in s.classes}
        # w_q is drawn inside q (its linear): highlighting it marks q
        assert marked == {"q" if h == "w_q" else h for h in highlight}
        for box in marked:
            assert "#e03131" in pic.nodes[f"box-{box}"].stroke
    html = index.read_text()
    order = [html.index(s) for s in ('src="step-00.svg"', "share-kv", 'src="step-01.svg"',
                                     "k[t, h, n] = share(k[t, g, n], g, h)", "scale",
                                     'src="step-02.svg"', "with q scaled")]
    assert order == sorted(order)
    assert "(approximate)" in html and 'href="#step-1"' in html


def test_changed_boxes_are_the_rewritten_region():
    text = (ZOO / "gqa.anat").read_text()
    gqa = anatomy.load(text)["gqa"]
    windowed = anatomy.load(text.replace("mask=causal(t, s)", "mask=window(t, s, size=4)"))
    biased = anatomy.load(text.replace("y[t, d] = linear(o)", "y[t, d] = linear(o, bias=true)"))
    assert changed_boxes(gqa, gqa) == frozenset()
    assert changed_boxes(gqa, windowed["gqa"]) == {"_10"}  # the mask box, nothing else
    assert changed_boxes(gqa, biased["gqa"]) == {"y", "b_y"}  # the projection and its bias


def test_proof_step_errors(tmp_path):
    gqa = zoo("gqa", "gqa")
    with pytest.raises(ValueError, match="nope"):
        render_proof([(gqa, {"nope"}, "start", "")], tmp_path)
    with pytest.raises(ValueError, match="kind"):
        render_proof([(gqa, set(), "start", "", "maybe")], tmp_path)


# -- the gallery ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gallery(tmp_path_factory) -> Path:
    return render_gallery(ZOO, tmp_path_factory.mktemp("site"))


def test_gallery_has_every_entry(gallery):
    html = gallery.read_text()
    for path, name in ENTRIES:
        svg = f"{path.stem}.{name}.svg"
        assert f'src="{svg}"' in html and (gallery.parent / svg).is_file()
        assert f"anatomy {name}(" in html  # its source
    headers = sum(line.startswith("anatomy ") for p in ZOO.glob("*.anat")
                  for line in p.read_text().splitlines())
    assert html.count("<img ") == headers == len(ENTRIES)
    # one-line summaries: the doc comment above GQA, the first line of hydra.anat's header
    assert "Grouped-query attention (Ainslie et al." in html
    assert "The semiseparable (SSD) mixer both directions use." in html


def test_gallery_screenshot_is_not_blank(gallery, tmp_path):
    if chromium() is None:
        pytest.skip("Chromium is not installed (apt-get install chromium; scripts/install.sh "
                    "installs it when run as root)")
    shot, blank = tmp_path / "gallery.png", tmp_path / "blank.png"
    screenshot(gallery, shot, 1280, 900)
    (tmp_path / "blank.html").write_text("<html><body></body></html>")
    screenshot(tmp_path / "blank.html", blank, 1280, 900)
    assert ink(blank) == 0  # the measure sees an empty page as empty
    assert ink(shot) > 0.03, "the gallery renders (almost) blank"


def test_svg_size_matches_what_a_browser_shows():
    assert svg_size_px('<svg width="300pt" height="150.5pt"') == (400, 201)


# -- errors -----------------------------------------------------------------------------------
def test_missing_dot_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(AnatError, match="apt-get install graphviz"):
        to_svg(zoo("gqa", "gqa"))
    assert to_dot(zoo("gqa", "gqa")).startswith("digraph gqa {")


def test_cli_without_dot(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path)}
    out = run("render", ZOO / "gqa.anat", "-o", tmp_path / "g.svg", env=env)
    assert out.returncode == 2 and "apt-get install graphviz" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "g.svg").exists()
    out = run("render", ZOO / "gqa.anat", "--format", "dot", "-o", tmp_path / "g.dot", env=env)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "g.dot").read_text().startswith("digraph gqa {")


def test_cli_renders_one_anatomy(tmp_path):
    out = run("render", f"{ZOO / 'hydra.anat'}:hydra", "-o", tmp_path / "h.svg",
              "--depth", "2", "--dims", "d=256")
    assert out.returncode == 0, out.stderr
    pic = parse((tmp_path / "h.svg").read_text())
    assert "composite-yf" in pic.clusters
    assert pic.nodes["box-in-x"].text == "x[t, d=256]"
    assert run("render", ZOO / "gqa.anat").stdout.startswith("<?xml")  # stdout by default


def test_cli_gallery(tmp_path):
    out = run("render", ZOO, "-o", tmp_path / "site")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "site" / "index.html").is_file()


@pytest.mark.parametrize("args,message", [
    (["nope.anat"], "no such file"),
    ([f"{ZOO / 'hydra.anat'}:hydro"], "did you mean `hydra`"),
    ([ZOO / "hydra.anat"], "defines 2 anatomies (ss, hydra): name one"),
    ([ZOO / "gqa.anat", "-o", "/proc/nope/g.svg"], "cannot write"),
    ([ZOO, "--format", "dot", "-o", "x"], "gallery"),
    ([ZOO], "-o FOLDER"),
    ([ZOO / "gqa.anat", "--depth", "0"], "positive integer"),
    ([ZOO / "gqa.anat", "--dims", "d=x"], "bad --dims"),
])
def test_cli_errors(args, message):
    out = run("render", *args)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr
