"""The language, construct by construct: what each one builds in the IR and what sizes the
checker infers. Expected values are worked out from the language's meaning (see the
comments), not copied from the tool."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import pytest

import anatomy
from anatomy import AnatError
from anatomy.ops import OPS

ZOO = Path(anatomy.zoo_dir())


def load1(text: str, name: str = "a", **dims) -> anatomy.Diagram:
    return anatomy.load(text, **dims)[name]


def boxes_of(d: anatomy.Diagram, op: str) -> list[anatomy.Box]:
    return [b for b in d.boxes if b.op == op]


@pytest.fixture(scope="module")
def mha() -> anatomy.Diagram:
    return anatomy.load(ZOO / "mha.anat")["mha"]


# -- wires, dims, sizes -----------------------------------------------------------------


def test_wires_have_named_axes_and_roles(mha):
    assert mha.wires["x"].axes == ("t", "d") and mha.wires["x"].role == "input"
    assert mha.wires["q"].axes == ("t", "h", "n") and mha.wires["q"].role == "internal"
    assert mha.wires["score"].axes == ("h", "t", "s")
    assert mha.wires["y"].role == "output"
    assert mha.wires["w_q"].role == "param"
    assert [p.name for p in mha.inputs] == ["x"] and [p.name for p in mha.outputs] == ["y"]
    assert mha.time_axis == "t"


def test_dims_defaults_and_derived(mha):
    assert [d.name for d in mha.dims.values()] == ["d", "h", "n"]
    s = mha.shapes
    assert (s.size("d"), s.size("h"), s.size("n")) == (512, 8, 512 // 8)
    assert s.shape("q") == (None, 8, 64)  # t is a free sequence axis
    assert s.size("t") is None and s.size("s") is None


def test_dims_override_at_load():
    d = anatomy.load(ZOO / "mha.anat", d=64)["mha"]
    assert d.shapes.size("n") == 8  # n = d / h = 64 / 8
    assert d.shapes.param_count() == 4 * 64 * 64


def test_dims_override_in_check(mha):
    s = mha.check(d=256, h=4)
    assert (s.size("d"), s.size("h"), s.size("n")) == (256, 4, 64)
    assert s.param_count() == 4 * 256 * 256
    assert mha.shapes.size("d") == 512  # the default shapes are untouched
    # overriding a derived dim replaces its expression
    assert mha.check(n=16).shape("w_q") == (512, 8, 16)


def test_dim_without_default_is_inferred_or_free():
    text = "anatomy a(x[t, d]) -> y[t, e]\n  dims d, e = 2 * d\n  y[t, e] = linear(x)\n"
    d = load1(text)
    assert d.shapes.size("d") is None and d.shapes.size("e") is None
    assert d.shapes.param_count() is None and "d" in d.shapes.free_axes()
    s = d.check(d=3)
    assert s.size("e") == 6 and s.param_count() == 3 * 6


def test_free_sequence_axes_are_unified_through_renaming():
    """k[s, n] where k is k[t, n] says size(s) = size(t): a size on t reaches s."""
    text = ("anatomy a(q[t, n], k[t, n]) -> y[t, n]\n  dims n = 4, t = 10\n"
            "  score[t, s] = q * k[s, n]\n  y[t, n] = score * k[s, n]\n")
    d = load1(text)
    assert d.shapes.size("s") == 10
    assert d.shapes.shape("score") == (10, 10)
    # without a size for t, both stay free but are one class
    free = load1(text.replace(", t = 10", ""))
    assert free.shapes.size("s") is None
    assert free.shapes.sizes.find("s") == free.shapes.sizes.find("t")


def test_sizes_flow_through_masks():
    text = ("anatomy a(x[t, d], m[u, d]) -> y[t, d]\n  dims t = 5\n"
            "  y[t, d] = causal(t, u) * m * x[u, d]\n")
    assert load1(text).shapes.size("u") == 5  # causal(t, u) is square


# -- statements and boxes -----------------------------------------------------------------


HEAD = "anatomy a(x[t, d]) -> y[t, d]\n  dims d = 8\n"


def test_one_statement_is_one_box():
    d = load1(HEAD + "  z[t, d] = relu(x)\n  y[t, d] = exp(z)\n")
    assert [(b.op, b.outputs) for b in d.boxes] == [("relu", ("z",)), ("exp", ("y",))]


def test_nested_expressions_become_boxes_on_anonymous_wires():
    d = load1(HEAD + "  y[t, d] = exp(relu(x))\n")
    inner, outer = d.boxes
    assert inner.op == "relu" and d.wires[inner.outputs[0]].anonymous
    assert outer.op == "exp" and outer.inputs[0].wire == inner.outputs[0]
    assert outer.outputs == ("y",)


def test_axes_only_on_the_right_are_summed():
    d = load1(HEAD + "  gram[t, s] = x * x[s, d]\n  y[t, d] = gram * x[s, d]\n")
    gram = d.box("gram")
    assert gram.op == "contract"
    assert [(u.wire, u.axes) for u in gram.inputs] == [("x", ("t", "d")), ("x", ("s", "d"))]
    assert d.wires["gram"].axes == ("t", "s")  # d is summed away
    y = d.box("y")
    assert [u.axes for u in y.inputs] == [("t", "s"), ("s", "d")]  # s is summed away


def test_a_single_wire_on_the_right_is_summed_or_transposed():
    d = load1(HEAD + "  tot[t] = x\n  tr[d, t] = x\n  y[t, d] = tr[d, t] / tot\n")
    assert d.box("tot").op == "contract" and d.wires["tot"].axes == ("t",)
    assert d.box("tr").op == "contract" and d.wires["tr"].axes == ("d", "t")


def test_scaled_product_contracts_without_materialising(mha):
    """score = q * k / sqrt(n): one contract box over q, k and a scalar 1/sqrt(n), so no
    [t, s, h, n] product is ever built."""
    score = mha.box("score")
    assert score.op == "contract"
    q, k, scale = score.inputs
    assert (q.wire, q.axes) == ("q", ("t", "h", "n"))
    assert (k.wire, k.axes) == ("k", ("s", "h", "n"))
    assert scale.axes == ()
    div = mha.producer(scale.wire)
    assert div.op == "div"
    assert mha.producer(div.inputs[0].wire).attr("value") == 1
    sqrt = mha.producer(div.inputs[1].wire)
    assert sqrt.op == "sqrt" and mha.producer(sqrt.inputs[0].wire).attr("axis") == "n"
    widest = max(len(w.axes) for w in mha.wires.values())
    assert widest == 3


def test_a_name_of_an_axis_or_dim_is_its_size():
    d = load1(HEAD + "  y[t, d] = x / d + log(t)\n")
    sizes = boxes_of(d, "size")
    assert sorted(b.attr("axis") for b in sizes) == ["d", "t"]
    assert all(d.wires[b.outputs[0]].axes == () for b in sizes)


def test_numbers_are_constants():
    d = load1(HEAD + "  y[t, d] = x * 0.5 + 2\n")
    assert sorted(b.attr("value") for b in boxes_of(d, "const")) == [0.5, 2]


# -- params and linear ------------------------------------------------------------------


def test_explicit_params_with_shape_and_initialiser():
    bah = anatomy.load(ZOO / "bahdanau.anat")["bahdanau"]
    va = bah.box("va")
    assert va.op == "param" and va.attr("init") == ("fan_in", "n")
    assert bah.wires["va"].axes == ("h", "n") and bah.wires["va"].role == "param"
    assert bah.shapes.shape("va") == (8, 64)
    # four d x d projections (wq, uk, v, y) plus va [h, n]
    assert bah.shapes.param_count() == 4 * 512 * 512 + 8 * 64


@pytest.mark.parametrize("decl, init", [
    ("param w[d]", ("normal", 0.02)),
    ("param w[d] ~ zeros", ("zeros",)),
    ("param w[d] ~ normal(1, 2)", ("normal", 1, 2)),
    ("param w[d] ~ uniform(-1, 1)", ("uniform", -1, 1)),
    ("param w[d] ~ constant(0.5)", ("constant", 0.5)),
    ("param w[d, e] ~ fan_in", ("fan_in", "d")),
    ("param w[d, e] ~ fan_in(e)", ("fan_in", "e")),
])
def test_param_initialisers(decl, init):
    d = load1(HEAD + f"  {decl}\n  y[t, d] = x * w\n")
    assert d.box("w").attr("init") == init


def test_linear_is_sugar_for_a_param_and_a_contraction(mha):
    q = mha.box("q")
    assert q.op == "linear"
    assert q.attr("in_axes") == ("d",) and q.attr("out_axes") == ("h", "n")
    x, w = q.inputs
    assert x.wire == "x" and w.wire == "w_q"  # the implicit param is named after the target
    w_box = mha.producer("w_q")
    assert w_box.op == "param" and w_box.attr("implicit") is True
    assert w_box.attr("init") == ("fan_in", "d")
    assert mha.wires["w_q"].axes == ("d", "h", "n")
    y = mha.box("y")  # o[t, h, n] -> y[t, d]: in = the axes the target lacks
    assert y.attr("in_axes") == ("h", "n") and y.attr("out_axes") == ("d",)
    assert mha.shapes.shape("w_y") == (8, 64, 512)


def test_linear_options():
    text = ("anatomy a(x[t, d]) -> y[t, d]\n  dims d = 8, h = 2, p = 4\n"
            "  k[t, h, p] = linear(x, bias=true)\n"
            "  v[t, p] = relu(linear(x, out=[p], name=wv))\n"
            "  g[t, d] = linear(x, in=[d])\n"
            "  two[t, p] = linear(x, out=[p]) + linear(x, out=[p])\n"
            "  y[t, d] = linear(k) + g + linear(v) + linear(two)\n")
    d = load1(text)
    k = d.box("k")
    assert [u.wire for u in k.inputs] == ["x", "w_k", "b_k"] and k.attr("bias") is True
    assert d.wires["b_k"].axes == ("h", "p") and d.shapes.shape("b_k") == (2, 4)
    lin_v = d.producer(d.box("v").inputs[0].wire)
    assert lin_v.op == "linear" and lin_v.inputs[1].wire == "wv"
    assert lin_v.attr("out_axes") == ("p",)
    g = d.box("g")  # d -> d: the weight's output axis is renamed d_out
    assert g.attr("in_axes") == ("d",) and g.attr("out_axes") == ("d",)
    assert d.wires["w_g"].axes == ("d", "d_out") and d.shapes.shape("w_g") == (8, 8)
    assert {"w_two", "w_two_2"} <= set(d.wires)  # two linears for one target
    # k: 8*2*4 + 2*4, wv: 8*4, g: 8*8, two: 2 * 8*4, outs: [h,p,d] 64, [p,d] 32, [p,d] 32
    assert d.shapes.param_count() == (64 + 8) + 32 + 64 + 64 + 64 + 32 + 32


# -- builtins ---------------------------------------------------------------------------

EVERY_BUILTIN = """\
anatomy every(x[t, d], g[t, h]) -> y[t, d]
  dims d = 8, h = 2, c = 4, r = 4, k = 1
  a[t, d] = exp(x) + log(x) + sqrt(x) + abs(x) + tanh(x) + relu(x) + elu(x) + gelu(x)
  b[t, d] = softplus(x) * sigmoid(x) * silu(x)
  score[t, s] = x * x[s, d]
  sm[t, s] = softmax(score, s, mask=causal(t, s))
  nm[t, s] = normalise(relu(score), s) * window(t, s, size=3) * full(t, s)
  l2[t, d] = l2normalise(x, d)
  ln[t, d] = layernorm(x, d)
  rn[t, d] = rmsnorm(x, d)
  xs[t, h, c] = linear(x)
  gn[t, h, c] = groupnorm(xs, c, h)
  dv[t, s, h] = decay(g, t, s)
  param lgam[h] ~ uniform(-1, 0)
  dc[t, s, h] = decay(lgam, t, s)
  sh[t, d] = shift(x, t) + flip(x, t)
  ro[t, d] = rope(x, t, d) + xpos(x, t, d)
  lo[t, c], hi[t, r] = split(x)
  cat[t, d] = concat(hi, lo)
  rs[t, h, c] = reshape(x)
  gr[t, k, c] = linear(x)
  shared[t, h, c] = share(gr, k, h)
  ix[t] = index(t) / size(t)
  att[t, d] = sm * x[s, d]
  nat[t, d] = nm * x[s, d]
  mixed[t, h] = dv * dc
  st[t, h, c] = scan(xs, g, t)
  ss[t, h, c] = ssd(xs, xs, xs, g, t, chunk=16)
  vr[t, h, r] = linear(x)
  dr[t, h, r] = delta_rule(xs, xs, vr, sigmoid(g), g, t)
  param ub[h, c] ~ uniform(-1, 1)
  sb[t, h, r] = ssd_bonus(xs, xs, vr, g, ub, t)
  fa[t, h, r] = attention(xs, xs[s, h, c], vr[s, h, r], t, s, causal=true, scale=0.5)
  y[t, d] = a + b + att + nat + l2 + ln + rn + linear(gn) \\
    + linear(mixed) + sh + ro + cat + linear(shared) + ix + linear(st + ss) + reshape(rs) \\
    + linear(dr) + linear(sb + fa)
"""


@pytest.fixture(scope="module")
def every() -> anatomy.Diagram:
    return anatomy.load(EVERY_BUILTIN)["every"]


def test_every_builtin_is_used(every):
    used = {b.op for b in every.boxes}
    assert set(OPS) <= used, set(OPS) - used


def test_elementwise_builtins_keep_axes(every):
    for op in ["exp", "log", "sqrt", "abs", "tanh", "relu", "elu", "gelu", "softplus",
               "sigmoid", "silu", "l2normalise"]:
        boxes = boxes_of(every, op)
        assert boxes, op
        for box in boxes:  # the output has exactly the input's axes
            assert every.wires[box.outputs[0]].axes == box.inputs[0].axes, op


def test_softmax_takes_an_axis_and_a_mask(every):
    sm = every.box("sm")
    assert sm.attr("along") == ("s",) and sm.attr("tensor_options") == ("mask",)
    mask = every.producer(sm.inputs[1].wire)
    assert mask.op == "causal" and every.wires[mask.outputs[0]].axes == ("t", "s")


def test_masks(every):
    (window,) = boxes_of(every, "window")
    assert window.attr("size") == 3 and window.attr("along") == ("t", "s")
    assert boxes_of(every, "full")[0].attr("along") == ("t", "s")


def test_norms_make_their_affine_params(every):
    ln = every.box("ln")
    assert [u.wire for u in ln.inputs] == ["x", "scale_ln", "shift_ln"]
    assert every.wires["scale_ln"].axes == ("d",)
    rn = every.box("rn")
    assert [u.wire for u in rn.inputs] == ["x", "scale_rn"]  # rms norm has no shift
    gn = every.box("gn")
    assert gn.attr("along") == ("c", "h")
    assert every.shapes.shape("scale_gn") == (2, 4)  # affine over (group, axis)
    retnet = anatomy.load(ZOO / "retnet.anat")["retnet"]
    (rms,) = boxes_of(retnet, "rmsnorm")
    assert rms.attr("affine") is False and len(rms.inputs) == 1


def test_decay_time_varying_and_constant(every):
    """decay(log_a[t, h], t, s) adds the key axis after t; a log-decay without t is
    constant over time: [t, s] in front of its own axes."""
    dv, dc = every.box("dv"), every.box("dc")
    assert dv.op == dc.op == "decay"
    assert dv.inputs[0].axes == ("t", "h") and every.wires["dv"].axes == ("t", "s", "h")
    assert dc.inputs[0].axes == ("h",) and every.wires["dc"].axes == ("t", "s", "h")
    cores = anatomy.load(ZOO / "cores.anat")
    y = cores["retention_core"].box("y")
    decay = cores["retention_core"].producer(y.inputs[0].wire)
    assert decay.op == "decay" and y.inputs[0].axes == ("t", "s", "h")


def test_shift_flip(every):
    (shift,) = boxes_of(every, "shift")
    (flip,) = boxes_of(every, "flip")
    assert shift.attr("along") == ("t",) and flip.attr("along") == ("t",)
    back = load1(HEAD + "  y[t, d] = shift(x, t, by=-1)\n").box("y")
    assert back.attr("by") == -1


def test_rope_and_xpos(every):
    (rope,) = boxes_of(every, "rope")
    (xpos,) = boxes_of(every, "xpos")
    assert rope.attr("along") == ("t", "d") and xpos.attr("along") == ("t", "d")
    keys = anatomy.load("""
anatomy f(x[t, n]) -> y[t, n]
  dims n = 8
  q[t, n] = xpos(x, t, n)
  k[t, n] = xpos(x, t, n, downscale=true)
  y[t, n] = q + k
""")["f"]
    # a default option is not stored; a given one is
    assert [b.attr("downscale") for b in boxes_of(keys, "xpos")] == [None, True]


def test_split_and_concat(every):
    split = every.box("lo")
    assert split.outputs == ("lo", "hi")
    assert split.attr("axis") == "d" and split.attr("parts") == ("c", "r")
    cat = every.box("cat")
    assert cat.attr("axis") == "d" and cat.attr("parts") == ("r", "c")


def test_split_infers_the_missing_part():
    text = ("anatomy a(x[t, d]) -> y[t, c]\n  dims d = 10, c = 4\n"
            "  y[t, c], rest[t, r] = split(x)\n")
    assert load1(text).shapes.size("r") == 6


def test_concat_infers_the_joined_size():
    text = ("anatomy a(x[t, c], z[t, r]) -> y[t, d]\n  dims c = 4, r = 2\n"
            "  y[t, d] = concat(x, z)\n")
    assert load1(text).shapes.size("d") == 6


def test_reshape_takes_its_axes_from_the_target(every):
    rs = every.box("rs")
    assert rs.attr("merge") == ("d",) and rs.attr("into") == ("h", "c")
    (back,) = [b for b in boxes_of(every, "reshape") if b.id != "rs"]  # nested in a sum
    assert back.attr("merge") == ("h", "c") and back.attr("into") == ("d",)


def test_reshape_infers_one_missing_size():
    text = ("anatomy a(x[t, d]) -> y[t, h, p]\n  dims d = 12, h = 3\n"
            "  y[t, h, p] = reshape(x)\n")
    assert load1(text).shapes.size("p") == 4
    text = ("anatomy a(x[t, h, p]) -> y[t, d]\n  dims h = 3, p = 4\n"
            "  y[t, d] = reshape(x)\n")
    assert load1(text).shapes.size("d") == 12


def test_composite_output_axes_are_named_by_the_target():
    """Output axes a composite's inputs do not determine take the target's names."""
    program = anatomy.load("""
anatomy proj(x[t, i]) -> y[t, o]
  dims i, o
  y[t, o] = linear(x)

anatomy outer(x[t, d]) -> y[t, d]
  dims d = 8, e = 6
  a[t, e] = proj(x)
  y[t, d] = proj(relu(a))
""")
    outer = program["outer"]
    assert outer.wires["a"].axes == ("t", "e") and outer.box("a").op == "call"
    assert outer.shapes.callees["a"].size("o") == 6  # o is e in that call
    assert outer.shapes.callees["y"].dims == {"i": 6, "o": 8}


def test_share_for_grouped_query_attention():
    gqa = anatomy.load(ZOO / "gqa.anat")["gqa"]
    kh = gqa.box("kh")
    assert kh.op == "share" and kh.attr("along") == ("g", "h")
    assert gqa.wires["k"].axes == ("t", "g", "n") and gqa.wires["kh"].axes == ("t", "h", "n")
    assert gqa.shapes.shape("w_k") == (512, 2, 64)
    # q and out projections: 512 * 512 each; k and v: 512 * 2 * 64 each
    assert gqa.shapes.param_count() == 2 * 512 * 512 + 2 * 512 * 2 * 64


def test_index_and_size(every):
    ix = every.box("ix")
    a, b = ix.inputs
    assert every.producer(a.wire).op == "index" and a.axes == ("t",)
    assert every.producer(b.wire).op == "size" and b.axes == ()


def test_builtin_names_are_reserved():
    for op in ["relu", "softmax", "linear"]:
        with pytest.raises(AnatError, match="name of a built-in box"):
            load1(HEAD + f"  {op}[t, d] = x\n  y[t, d] = x\n")


# -- composites ----------------------------------------------------------------------------

COMPOSITE = """\
anatomy proj(x[t, d]) -> y[t, e]
  dims d, e = 4
  y[t, e] = linear(x)

anatomy outer(x[t, d]) -> y[t, d]
  dims d = 8
  p[t, e] = proj(x, e=6)
  y[t, d] = linear(p)
"""


def test_composite_box_calls_another_anatomy():
    program = anatomy.load(COMPOSITE)
    outer = program["outer"]
    p = outer.box("p")
    assert p.op == "call" and p.attr("anatomy") == "proj" and p.attr("dims") == (("e", 6),)
    assert outer.wires["p"].axes == ("t", "e")
    callee = outer.shapes.callees["p"]
    # d bound from the input's size, e passed as a keyword
    assert (callee.size("d"), callee.size("e")) == (8, 6)
    assert outer.shapes.size("e") == 6
    # proj's weight [8, 6] counts towards outer, plus outer's own [6, 8]
    assert outer.shapes.param_count() == 8 * 6 + 6 * 8
    # on its own, proj has no size for d
    assert program["proj"].shapes.param_count() is None


def test_composite_axes_are_renamed_positionally():
    text = ("anatomy f(a[u, k]) -> b[u, k]\n  b[u, k] = relu(a)\n"
            "anatomy g(x[t, d]) -> y[t, d]\n  dims d = 3\n  y[t, d] = f(x)\n")
    g = anatomy.load(text)["g"]
    assert g.box("y").op == "call" and g.wires["y"].axes == ("t", "d")


def test_composite_with_several_outputs():
    text = ("anatomy two(x[t, d]) -> a[t, d], b[t, d]\n  a[t, d] = x\n  b[t, d] = -x\n"
            "anatomy g(x[t, d]) -> y[t, d]\n  p[t, d], m[t, d] = two(x)\n  y[t, d] = p + m\n")
    g = anatomy.load(text)["g"]
    assert g.box("p").outputs == ("p", "m")


def test_use_between_files(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "core.anat").write_text(
        "slot mixer(x[t, d]) -> y[t, d]\n"
        "anatomy gate(x[t, d]) -> y[t, d]\n  y[t, d] = sigmoid(x) * x\n")
    main = tmp_path / "main.anat"
    main.write_text('use "lib/core.anat"\n'
                    "anatomy top(x[t, d]) -> y[t, d]\n  y[t, d] = gate(x) + slot mixer(x)\n")
    program = anatomy.load(main)
    assert [d.name for d in program] == ["top"]  # iteration: own anatomies only
    assert "gate" in program and "mixer" in program.slots
    assert program["top"].box("y").op == "add"
    assert program["gate"].file.endswith("core.anat")


def test_use_from_the_zoo():
    text = ('use "cores.anat"\n'
            "anatomy mine(x[t, d]) -> y[t, d]\n  dims d = 16, h = 2, n = d / h\n"
            "  o[t, h, n] = softmax_core(linear(x, out=[h, n]), linear(x, out=[h, n]), linear(x, out=[h, n]))\n"
            "  y[t, d] = linear(o)\n")
    mine = anatomy.load(text)["mine"]
    o = mine.box("o")
    assert o.op == "call" and o.attr("anatomy") == "softmax_core"
    assert mine.shapes.param_count() == 4 * 16 * 16


def test_use_loads_a_file_once(tmp_path):
    (tmp_path / "base.anat").write_text("anatomy f(x[t]) -> y[t]\n  y[t] = x\n")
    (tmp_path / "left.anat").write_text('use "base.anat"\n'
                                        "anatomy l(x[t]) -> y[t]\n  y[t] = f(x)\n")
    (tmp_path / "right.anat").write_text('use "base.anat"\n'
                                         "anatomy r(x[t]) -> y[t]\n  y[t] = f(x)\n")
    (tmp_path / "top.anat").write_text('use "left.anat"\n'
                                       "anatomy top(x[t]) -> y[t]\n  y[t] = l(x)\n")
    assert "f" in anatomy.load(tmp_path / "top.anat")


# -- slots ---------------------------------------------------------------------------------

SLOTS = """\
slot mixer(q[t, n], k[t, n], v[t, n]) -> o[t, n]

# softmax mixing
anatomy soft(q[t, n], k[t, n], v[t, n]) -> o[t, n] fills mixer
  o[t, n] = softmax(q * k[s, n], s, mask=causal(t, s)) * v[s, n]

anatomy lin(a[u, e], b[u, e], c[u, e]) -> z[u, e] fills mixer
  z[u, e] = causal(u, w) * a * b[w, e] * c[w, e]

anatomy block(x[t, d]) -> y[t, d]
  dims d = 16, n = 4
  y[t, d] = linear(slot mixer(linear(x, out=[n]), linear(x, out=[n]), linear(x, out=[n])))
"""


def test_slots_templates_and_fillers():
    program = anatomy.load(SLOTS)
    assert str(program.slots["mixer"]) == "(q[t, n], k[t, n], v[t, n]) -> o[t, n]"
    assert [d.name for d in program.fillers("mixer")] == ["soft", "lin"]  # up to renaming
    assert program.fillers("nothing") == []
    block = program["block"]
    (slot,) = boxes_of(block, "slot")
    assert slot.attr("slot") == "mixer" and len(slot.inputs) == 3
    assert block.wires[slot.outputs[0]].axes == ("t", "n")  # o[t, n], renamed by position
    assert block.shapes.param_count() == 3 * 16 * 4 + 4 * 16
    assert program["soft"].fills == "mixer" and program["block"].fills is None


def test_mismatching_filler_is_an_error():
    bad = SLOTS.replace("anatomy lin(a[u, e], b[u, e], c[u, e]) -> z[u, e]",
                        "anatomy lin(a[u, e], b[u, e], c[e, u]) -> z[u, e]")
    with pytest.raises(AnatError, match="lin does not match slot mixer"):
        anatomy.load(bad)


# -- views ---------------------------------------------------------------------------------


def test_graph_view(mha):
    g = mha.graph
    assert isinstance(g, nx.MultiDiGraph) and nx.is_directed_acyclic_graph(g)
    assert g.nodes["in:x"]["kind"] == "input" and g.nodes["out:y"]["kind"] == "output"
    assert g.nodes["score"]["box"].op == "contract"
    # one node per box and port, one edge per box input and output port
    assert g.number_of_nodes() == len(mha.boxes) + 2
    assert g.number_of_edges() == sum(len(b.inputs) for b in mha.boxes) + 1
    assert g.edges["k", "score", "k"]["axes"] == ("s", "h", "n")
    assert g.has_edge("y", "out:y")
    order = list(nx.topological_sort(g))
    assert order.index("in:x") < order.index("q") < order.index("score") < order.index("y")


def test_producer_and_consumers(mha):
    assert mha.producer("score").op == "contract"
    assert mha.producer("x") is None
    assert [b.id for b in mha.consumers("x")] == ["q", "k", "v"]
    assert [b.id for b in mha.params()] == ["w_q", "w_k", "w_v", "w_y"]


def test_comment_above_an_anatomy_is_its_doc():
    program = anatomy.load(SLOTS)
    assert program["soft"].doc == "softmax mixing"
    assert program["lin"].doc == "" and program["block"].doc == ""
    cores = anatomy.load(ZOO / "cores.anat")
    assert cores["softmax_core"].doc.startswith("Causal softmax attention")
    assert cores["ssd_core"].doc.count("\n") == 1  # a two-line comment


def test_to_text_and_str(mha):
    assert str(mha) == mha.to_text()
    assert mha.to_text().splitlines()[2] == "anatomy mha(x[t, d]) -> y[t, d]"


def test_loading_text_and_paths_alike():
    text = (ZOO / "mqa.anat").read_text()
    assert anatomy.load(text)["mqa"].structure() == anatomy.load(ZOO / "mqa.anat")["mqa"] \
        .structure()
    assert anatomy.load(str(ZOO / "mqa.anat"))["mqa"].file == str(ZOO / "mqa.anat")


def test_the_zoo_loads():
    zoo = anatomy.zoo()
    assert {"mha", "gqa", "ssd", "hydra", "cores"} <= set(zoo)
    assert all(d.shapes is not None for p in zoo.values() for d in p)


def test_statements_separated_by_semicolons_and_continued_lines():
    d = load1(HEAD + "  z[t, d] = relu(x); w[t, d] = exp(z)\n  y[t, d] = z + \\\n    w\n")
    assert [b.op for b in d.boxes] == ["relu", "exp", "add"]
