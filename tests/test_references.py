"""Sanity tests that make the independent references (tests/references.py) trustworthy alone.

They check the references against each other, against explicit recurrences and loops
written here, and against torch's own attention; none of them touches the lowering.
Tolerance: float64 throughout, max abs error / max(1, max |want|) <= 1e-10 (TOL).
"""

from __future__ import annotations

import math

import pytest
import references as R
import torch
from torch.nn import functional as F

TOL = 1e-10
DT = torch.float64


def assert_close(got: torch.Tensor, want: torch.Tensor, tol: float = TOL, what: str = ""):
    assert got.shape == want.shape, (what, got.shape, want.shape)
    assert torch.isfinite(got).all() and torch.isfinite(want).all(), what
    err = float((got - want).abs().max()) / max(1.0, float(want.abs().max()))
    assert err <= tol, f"{what}: scaled max abs error {err:.3e} > {tol:.0e}"


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DT)


def log_decay(*shape, seed=0):
    return -F.softplus(randn(*shape, seed=seed))


# ------------------------------------------------------------------ every reference runs


def param_shapes(d, shapes, prefix: str = "") -> dict[str, tuple]:
    """Every parameter of a diagram and of the anatomies used in it (`box.param`)."""
    out = {}
    for b in d.boxes:
        if b.op == "param":
            w = b.outputs[0]
            out[prefix + w] = tuple(shapes.size(a) for a in d.wires[w].axes)
        elif b.op == "call":
            out.update(param_shapes(d.program.anatomies[b.attr("anatomy")],
                                    shapes.callees[b.id], f"{prefix}{b.id}."))
    return out


@pytest.mark.parametrize("name", sorted(R.REFERENCES))
def test_every_reference_runs_at_default_dims(name):
    d = R.load_zoo(name)
    B, T = 2, 5
    params = R.random_params(d, seed=1)
    assert {w: tuple(p.shape) for w, p in params.items()} == param_shapes(d, d.shapes)
    inputs = R.random_inputs(d, B, T, seed=2)
    assert sorted(inputs) == sorted(p.name for p in d.inputs)
    y = R.REFERENCES[name][1](inputs, params, R.axis_sizes(d))
    sizes = R.axis_sizes(d, R.CORE_SIZES)
    (out,) = d.outputs
    assert tuple(y.shape) == (B, T) + tuple(sizes[a] for a in out.axes[1:])
    assert y.dtype == DT and torch.isfinite(y).all()


def test_cores_vectorised_at_long_sequences():
    d = R.load_zoo("quasiseparable_core")
    inputs = R.random_inputs(d, 1, 256, seed=3)
    y = R.ref_quasiseparable_core(inputs)
    assert_close(y, R.ref_hydra_construction_core(inputs), what="T=256 QS")


# ------------------------------------------------------------------ building blocks


def test_decay_matrix_is_product_of_decays_and_composes():
    B, T, H = 2, 7, 3
    la, lb = log_decay(B, T, H, seed=1), log_decay(B, T, H, seed=2)
    L = R.decay_matrix(la)
    want = torch.zeros(B, H, T, T, dtype=DT)
    a = la.exp()
    for t in range(T):
        for s in range(t + 1):
            prod = torch.ones(B, H, dtype=DT)
            for i in range(s + 1, t + 1):
                prod = prod * a[:, i]
            want[:, :, t, s] = prod
    assert_close(L, want, what="decay matrix")
    assert_close(R.decay_matrix(la) * R.decay_matrix(lb), R.decay_matrix(la + lb),
                 what="L(a) o L(b) = L(ab)")
    lg = log_decay(B, H, seed=3)
    assert_close(R.constant_decay_matrix(lg, T),
                 R.decay_matrix(lg[:, None, :].expand(B, T, H)), what="constant decay")


def test_shift_flip_share():
    x = randn(2, 5, 3)
    y = R.shift(x)
    assert (y[:, 0] == 0).all() and torch.equal(y[:, 1:], x[:, :-1])
    y = R.shift(x, by=-1)
    assert (y[:, -1] == 0).all() and torch.equal(y[:, :-1], x[:, 1:])
    assert torch.equal(R.flip(R.flip(x)), x)
    g = randn(2, 5, 2, 4)
    s = R.share(g, 6)
    for i in range(6):
        assert torch.equal(s[:, :, i], g[:, :, i // 3])


def test_rope_against_complex_rotation_and_relative_property():
    B, T, H, N = 2, 9, 3, 8
    x = randn(B, T, H, N, seed=4)
    half = N // 2
    z = torch.complex(x[..., :half], x[..., half:])
    theta = 10000.0 ** (-torch.arange(half, dtype=DT) * 2 / N)
    rot = torch.polar(torch.ones(T, half, dtype=DT), torch.arange(T, dtype=DT)[:, None] * theta)
    zr = z * rot[None, :, None, :]
    want = torch.cat([zr.real, zr.imag], dim=-1)
    assert_close(R.rope(x), want, what="rope")
    # <rope(q)_t, rope(k)_s> depends on t - s only: shifting both positions by 3 keeps it.
    q, k = randn(1, 1, 1, N, seed=5), randn(1, 1, 1, N, seed=6)
    qs, ks = R.rope(q.expand(1, T, 1, N)), R.rope(k.expand(1, T, 1, N))
    assert_close((qs[0, 5] * ks[0, 2]).sum(), (qs[0, 8] * ks[0, 5]).sum(), what="relative")


def test_xpos_scale_and_relative_decay():
    T, N = 600, 8
    x = randn(1, T, 1, N, seed=7)
    up, down = R.xpos(x), R.xpos(x, downscale=True)
    for t in (0, 1, 599):
        for i in range(N // 2):
            zeta = (2 * i / N + 0.4) / 1.4
            s = zeta ** (t / 512)
            for j in (i, i + N // 2):
                r = R.rope(x)[0, t, 0, j]
                # scale commutes with the rotation of its pair
                assert abs(float(up[0, t, 0, j] - r * s)) <= TOL
                assert abs(float(down[0, t, 0, j] - r / s)) <= TOL


# ------------------------------------------------------------------ core equivalences


def test_softmax_core_matches_sdpa():
    B, T, H, N, P = 2, 11, 3, 8, 5
    q, k, v = randn(B, T, H, N, seed=1), randn(B, T, H, N, seed=2), randn(B, T, H, P, seed=3)
    y = R.ref_softmax_core({"q": q, "k": k, "v": v})
    want = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                          v.transpose(1, 2), is_causal=True).transpose(1, 2)
    assert_close(y, want, what="softmax vs sdpa")


def _ssd_recurrence(q, k, v, log_a):
    """S_t = a_t S_{t-1} + k_t^T v_t, y_t = q_t S_t, per head (q, k shared by groups)."""
    B, T, H, P = v.shape
    G, N = q.shape[2], q.shape[3]
    S = torch.zeros(B, H, N, P, dtype=DT)
    ys = []
    for t in range(T):
        qt = torch.stack([q[:, t, h // (H // G)] for h in range(H)], 1)  # [B, H, N]
        kt = torch.stack([k[:, t, h // (H // G)] for h in range(H)], 1)
        S = log_a[:, t].exp()[..., None, None] * S + kt[..., :, None] * v[:, t, :, None, :]
        ys.append(torch.einsum("bhn,bhnp->bhp", qt, S))
    return torch.stack(ys, 1)


def test_ssd_core_equals_recurrence():
    B, T, G, H, N, P = 2, 13, 2, 4, 5, 3
    inp = {"q": randn(B, T, G, N, seed=1), "k": randn(B, T, G, N, seed=2),
           "v": randn(B, T, H, P, seed=3), "log_a": log_decay(B, T, H, seed=4)}
    assert_close(R.ref_ssd_core(inp), _ssd_recurrence(**inp), what="ssd recurrence")


def test_retention_equals_ssd_with_constant_decay_and_recurrence():
    B, T, H, N, P = 2, 10, 3, 4, 6
    q, k, v = randn(B, T, H, N, seed=1), randn(B, T, H, N, seed=2), randn(B, T, H, P, seed=3)
    lg = log_decay(B, H, seed=4)
    y = R.ref_retention_core({"q": q, "k": k, "v": v, "log_gamma": lg})
    la = lg[:, None, :].expand(B, T, H)
    assert_close(y, R.ref_ssd_core({"q": q, "k": k, "v": v, "log_a": la}), what="ret=ssd")
    assert_close(y, _ssd_recurrence(q, k, v, la), what="retention recurrence")


def test_linear_core_equals_ssd_with_unit_decay_and_rnn():
    B, T, H, N, P = 2, 9, 2, 4, 3
    q, k, v = randn(B, T, H, N, seed=1), randn(B, T, H, N, seed=2), randn(B, T, H, P, seed=3)
    y = R.ref_linear_core({"q": q, "k": k, "v": v})
    zero = torch.zeros(B, T, H, dtype=DT)
    assert_close(y, R.ref_ssd_core({"q": q, "k": k, "v": v, "log_a": zero}), what="lin=ssd")
    assert_close(y, _ssd_recurrence(q, k, v, zero), what="linear rnn")
    assert_close(R.ref_causal_mix({"q": q, "k": k, "v": v}), y, what="causal_mix")


def test_causal_mix_normalised_equals_rnn_with_normaliser():
    B, T, H, N = 2, 8, 2, 4
    q = F.elu(randn(B, T, H, N, seed=1)) + 1
    k = F.elu(randn(B, T, H, N, seed=2)) + 1
    v = randn(B, T, H, N, seed=3)
    S = torch.zeros(B, H, N, N, dtype=DT)
    zsum = torch.zeros(B, H, N, dtype=DT)
    ys = []
    for t in range(T):
        S = S + k[:, t, :, :, None] * v[:, t, :, None, :]
        zsum = zsum + k[:, t]
        num = torch.einsum("bhn,bhnp->bhp", q[:, t], S)
        ys.append(num / (q[:, t] * zsum).sum(-1, keepdim=True))
    want = torch.stack(ys, 1)
    assert_close(R.ref_causal_mix_normalised({"q": q, "k": k, "v": v}), want, what="normalised")


def _qs_closed_form(qf, kf, qb, kb, v, log_af, log_ab, diag):
    """Element by element: M[t, s] for s < t, s > t and s = t, from the Hydra derivation."""
    B, T, H, P = v.shape
    y = torch.zeros(B, T, H, P, dtype=DT)
    for t in range(T):
        acc = diag[:, t, :, None] * v[:, t]
        for s in range(T):
            if s < t:  # row t-1 of the forward SS matrix: c_{t-1} b_s prod a_{s+1..t-1}
                w = (qf[:, t - 1] * kf[:, s]).sum(-1) * log_af[:, s + 1:t].sum(1).exp()
            elif s > t:  # row t+1 of the backward one, mirrored: prod a_{t+1..s-1}
                w = (qb[:, t + 1] * kb[:, s]).sum(-1) * log_ab[:, t + 1:s].sum(1).exp()
            else:
                continue
            acc = acc + w[..., None] * v[:, s]
        y[:, t] = acc
    return y


def test_quasiseparable_matrix_equals_construction_and_closed_form():
    d = R.load_zoo("quasiseparable_core")
    inputs = R.random_inputs(d, 2, 7, seed=5)
    mat = R.ref_quasiseparable_core(inputs)
    con = R.ref_hydra_construction_core(inputs)
    assert_close(mat, con, what="matrix form vs construction")
    assert_close(mat, _qs_closed_form(**inputs), what="closed form")
    # the diagonal is free, and no direction sees its own position
    zero_diag = dict(inputs, diag=torch.zeros_like(inputs["diag"]))
    v2 = inputs["v"].clone()
    v2[:, 3] += 1.0
    delta = (R.ref_quasiseparable_core(dict(zero_diag, v=v2))
             - R.ref_quasiseparable_core(zero_diag))
    assert float(delta[:, 3].abs().max()) == 0.0


# ------------------------------------------------------------------ mixers


def test_mha_equals_gqa_with_g_equal_h():
    mha = R.load_zoo("mha")
    gqa = R.load_zoo("gqa", g=8)
    p = R.random_params(mha, seed=1)
    x = R.random_inputs(mha, 2, 6, seed=2)
    pg = R.random_params(gqa, seed=9)
    assert pg["w_k"].shape == p["w_k"].shape
    assert_close(R.ref_gqa(x, dict(p)), R.ref_mha(x, p), what="mha = gqa(g=h)")


def test_mqa_equals_gqa_with_one_group():
    mqa = R.load_zoo("mqa")
    p = R.random_params(mqa, seed=1)
    x = R.random_inputs(mqa, 2, 6, seed=2)
    pg = dict(p, w_k=p["w_k"][:, None, :], w_v=p["w_v"][:, None, :])
    assert tuple(pg["w_k"].shape) == tuple(R.random_params(R.load_zoo("gqa", g=1))["w_k"].shape)
    assert_close(R.ref_gqa(x, pg), R.ref_mqa(x, p), what="mqa = gqa(g=1)")


def test_gqa_heads_read_their_group():
    d = R.load_zoo("gqa", d=32, h=4, g=2)
    p, x = R.random_params(d, seed=1), R.random_inputs(d, 2, 5, seed=2)["x"]
    q = torch.einsum("btd,dhn->bthn", x, p["w_q"])
    k = torch.einsum("btd,dgn->btgn", x, p["w_k"])
    v = torch.einsum("btd,dgn->btgn", x, p["w_v"])
    o = torch.zeros_like(q)
    for h in range(4):
        gi = h // 2
        for t in range(5):
            sc = torch.stack([(q[:, t, h] * k[:, s, gi]).sum(-1) for s in range(t + 1)], -1)
            w = torch.softmax(sc / math.sqrt(q.shape[-1]), -1)
            o[:, t, h] = sum(w[:, s, None] * v[:, s, gi] for s in range(t + 1))
    want = torch.einsum("bthn,hnd->btd", o, p["w_y"])
    assert_close(R.ref_gqa({"x": x}, p), want, what="gqa loop")


def test_sigmoid_relu_bahdanau_against_loops():
    T = 5
    for name in ("sigmoid_attention", "relu_attention", "bahdanau"):
        d = R.load_zoo(name, d=32, h=2)
        p, x = R.random_params(d, seed=1), R.random_inputs(d, 2, T, seed=2)["x"]
        wname = {"bahdanau": ("w_wq", "w_uk")}.get(name, ("w_q", "w_k"))
        q = torch.einsum("btd,dhn->bthn", x, p[wname[0]])
        k = torch.einsum("btd,dhn->bthn", x, p[wname[1]])
        v = torch.einsum("btd,dhn->bthn", x, p["w_v"])
        N = q.shape[-1]
        o = torch.zeros_like(q)
        for h in range(2):
            for t in range(T):
                if name == "bahdanau":
                    sc = torch.stack([torch.tanh(q[:, t, h] + k[:, s, h]) @ p["va"][h]
                                      for s in range(t + 1)], -1)
                    w = torch.softmax(sc, -1)
                else:
                    sc = torch.stack([(q[:, t, h] * k[:, s, h]).sum(-1) / math.sqrt(N)
                                      for s in range(t + 1)], -1)
                    w = (torch.sigmoid(sc - math.log(T)) if name == "sigmoid_attention"
                         else torch.relu(sc) / T)
                o[:, t, h] = sum(w[:, s, None] * v[:, s, h] for s in range(t + 1))
        want = torch.einsum("bthn,hnd->btd", o, p["w_y"])
        assert_close(R.REFERENCES[name][1]({"x": x}, p), want, what=name)


def test_ssd_mixer_equals_mamba2_recurrence():
    d = R.load_zoo("ssd", d=64, n=8)
    p, x = R.random_params(d, seed=1), R.random_inputs(d, 2, 9, seed=2)["x"]
    xs = torch.einsum("btd,dhp->bthp", x, p["w_xs"])
    z = torch.einsum("btd,dhp->bthp", x, p["w_z"])
    b, c = x @ p["w_b"], x @ p["w_c"]
    dt = F.softplus(x @ p["w_dt"] + p["dt_bias"])
    A = -torch.exp(p["a_log"])
    B_, T, H, P = xs.shape
    h = torch.zeros(B_, H, b.shape[-1], P, dtype=DT)
    ys = []
    for t in range(T):  # h_t = exp(dt A) h_{t-1} + B_t (dt x_t)^T, y_t = C_t^T h_t + D x_t
        h = torch.exp(dt[:, t] * A)[..., None, None] * h \
            + b[:, t, None, :, None] * (dt[:, t, :, None] * xs[:, t])[:, :, None, :]
        ys.append(torch.einsum("bn,bhnp->bhp", c[:, t], h) + p["D"][:, None] * xs[:, t])
    y = torch.stack(ys, 1) * F.silu(z)
    y = y / torch.sqrt(y.pow(2).mean((-2, -1), keepdim=True) + 1e-5) * p["scale_o"]
    want = torch.einsum("bthp,hpd->btd", y, p["w_y"])
    assert_close(R.ref_ssd({"x": x}, p), want, what="mamba-2 recurrence")


def test_retnet_reference_code_normalisations_cancel_without_eps():
    """torchscale's parallel form (decay mask / sqrt(row sums), scores / clamped |row sum|)
    equals the paper's equations once the per-head RMSNorm has eps = 0."""
    d = R.load_zoo("retnet", d=64, h=4)
    p, x = R.random_params(d, seed=1), R.random_inputs(d, 2, 12, seed=2)["x"]
    q = R.rope(torch.einsum("btd,dhn->bthn", x, p["w_q"]))
    k = R.rope(torch.einsum("btd,dhn->bthn", x, p["w_k"]))
    k = k / math.sqrt(k.shape[-1])
    v = torch.einsum("btd,dhp->bthp", x, p["w_v"])
    H, T = q.shape[2], q.shape[1]
    mask = R.constant_decay_matrix(R.retnet_log_gamma(H)[None], T)  # [1, H, T, S]
    mask = mask / mask.sum(-1, keepdim=True).sqrt()
    qk = torch.einsum("bthn,bshn->bhts", q, k) * mask
    qk = qk / qk.abs().sum(-1, keepdim=True).clamp(min=1, max=5e4)
    r = torch.einsum("bhts,bshp->bthp", qk, v)
    r = r / torch.sqrt(r.pow(2).mean(-1, keepdim=True))
    o = F.silu(torch.einsum("btd,dhp->bthp", x, p["w_g"])) * r
    want = torch.einsum("bthp,hpd->btd", o, p["w_y"])
    assert_close(R.ref_retnet({"x": x}, p, eps=0.0), want, tol=1e-9, what="retnet code form")


def test_hydra_without_backward_and_diag_is_shifted_ssd():
    """Zeroing the backward C and fc_D weights, with D = 0, leaves shift of the SSD scan."""
    d = R.load_zoo("hydra", d=64, n=8)
    p, x = R.random_params(d, seed=1), R.random_inputs(d, 2, 7, seed=2)["x"]
    p = dict(p, w_yb=torch.zeros_like(p["w_yb"]), w_diag=torch.zeros_like(p["w_diag"]),
             D=torch.zeros_like(p["D"]))
    xs = torch.einsum("btd,dhp->bthp", x, p["w_xs"])
    dt = F.softplus(x @ p["w_dtf"] + p["dt_bias"])
    la = dt * -torch.exp(p["a_log"])
    yf = _ssd_recurrence((x @ p["w_yf"])[:, :, None], (x @ p["w_yf_2"])[:, :, None],
                         xs * dt[..., None], la)
    mix = torch.cat([torch.zeros_like(yf[:, :1]), yf[:, :-1]], 1)
    z = torch.einsum("btd,dhp->bthp", x, p["w_z"])
    y = mix / torch.sqrt(mix.pow(2).mean((-2, -1), keepdim=True) + 1e-5) * p["scale_o"]
    y = y * F.silu(z)  # Hydra's code: the norm before the gate
    want = torch.einsum("bthp,hpd->btd", y, p["w_y"])
    assert_close(R.ref_hydra({"x": x}, p), want, what="hydra forward only")


def test_random_params_follow_initialisers():
    d = R.load_zoo("ssd")
    p = R.random_params(d, seed=0)
    a = p["a_log"].exp()
    assert ((a >= 1) & (a <= 16)).all()
    dt = F.softplus(p["dt_bias"])
    assert ((dt >= 1e-3 - 1e-12) & (dt <= 0.1 + 1e-12)).all()
    assert p["w_xs"].dtype == DT
    assert torch.equal(p["w_xs"], R.random_params(d, seed=0)["w_xs"])
    inputs = R.random_inputs(R.load_zoo("ssd_core"), 2, 4, seed=0)
    assert (inputs["log_a"] < 0).all()


def test_gta_without_rope_parts_is_gqa_on_tied_kv():
    """With the RoPE projections zeroed, GTA is GQA whose value is kv and whose key is kv
    with its second (RoPE) half zeroed: checks the tying, the split and the concat order."""
    d = R.load_zoo("gta", d=64, h=4, g=2)
    p, x = R.random_params(d, seed=1), R.random_inputs(d, 2, 6, seed=2)
    c = p["w_kv"].shape[-1] // 2
    wq = p["w_q_nope"].clone()
    wq[..., c:] = 0
    p = dict(p, w_q_nope=wq, w_k_rope=torch.zeros_like(p["w_k_rope"]))
    wk = p["w_kv"].clone()
    wk[..., c:] = 0
    pg = {"w_q": wq, "w_k": wk, "w_v": p["w_kv"], "w_y": p["w_y"]}
    assert_close(R.ref_gta(x, p), R.ref_gqa(x, pg), what="gta vs gqa")
    # and the RoPE halves matter when present
    full = R.random_params(d, seed=1)
    assert float((R.ref_gta(x, full) - R.ref_gta(x, p)).abs().max()) > 1e-3


def test_mla_reference_equals_its_absorbed_computation():
    """W_UK folded into the query and W_UV into the output, written here step by step."""
    d = R.load_zoo("mla", d=32, h=4, n=8, r=4, l=16, m=24)
    p, x = R.random_params(d, seed=1), R.random_inputs(d, 2, 7, seed=2)["x"]
    c_kv, c_q, k_r = R._mla_latents(x, p)
    q_l = torch.einsum("btm,mhn,lhn->bthl", c_q, p["w_q_c"], p["w_uk"])
    q_r = R.rope(torch.einsum("btm,mhr->bthr", c_q, p["w_q_r"]))
    o = torch.zeros(2, 7, 4, 16, dtype=DT)
    for t in range(7):
        sc = (torch.einsum("bhl,bsl->bhs", q_l[:, t], c_kv[:, :t + 1])
              + torch.einsum("bhr,bsr->bhs", q_r[:, t], k_r[:, :t + 1])) / math.sqrt(8 + 4)
        o[:, t] = torch.einsum("bhs,bsl->bhl", torch.softmax(sc, -1), c_kv[:, :t + 1])
    want = torch.einsum("bthl,lhn,hnd->btd", o, p["w_uv"], p["w_y"])
    assert_close(R.ref_mla({"x": x}, p), want, what="absorbed MLA")


def test_gla_reference_with_one_group_is_mla():
    mla = R.load_zoo("mla", d=32, h=4, n=8, r=4, l=16, m=24)
    p, x = R.random_params(mla, seed=1), R.random_inputs(mla, 2, 6, seed=2)
    pg = dict(p, w_c_kv=p["w_c_kv"][:, None, :], scale_c_kv=p["scale_c_kv"])
    assert_close(R.ref_gla(x, pg), R.ref_mla(x, p), what="gla(g=1) = mla")


def test_pattention_against_the_papers_formula_entry_by_entry():
    x, kp, vp = randn(3, 5, seed=1), randn(7, 5, seed=2), randn(7, 4, seed=3)
    want = torch.zeros(3, 4, dtype=DT)
    for i in range(3):
        a = [float(x[i] @ kp[j]) for j in range(7)]
        norm = math.sqrt(sum(v * v for v in a))
        for j in range(7):  # f(A_ij * tau / |A_i|), tau = sqrt(n) = sqrt(7), f = GeLU
            z = a[j] * math.sqrt(7) / norm
            want[i] += 0.5 * z * (1 + math.erf(z / math.sqrt(2))) * vp[j]
    assert_close(R.pattention(x, kp, vp), want, what="pattention")


def test_leaky_key_is_the_decayed_sum_and_the_gaussian_kernel_is_a_dot_product():
    d = R.load_zoo("context_memory", d=16, h=2)
    p, x = R.random_params(d, seed=1), R.random_inputs(d, 1, 6, seed=2)["x"]
    kt = torch.einsum("btd,dhn->bthn", x, p["w_kt"])
    lam = torch.exp(-p["leak"].abs())
    kbar = torch.stack([sum(lam[:, None] ** (t - u) * kt[:, u] for u in range(t + 1))
                        for t in range(6)], 1)
    k = R._leaky_key(x, p)
    assert_close(k, kbar / kbar.norm(dim=-1, keepdim=True), what="leaky average")
    # unit keys: exp(-beta |k_t - k_u|^2) is proportional in u to exp(2 beta k_t.k_u)
    beta = torch.exp(p["log_beta"])
    dist = -beta * (k[:, 5, None] - k[:, :5]).pow(2).sum(-1)
    dot = 2 * beta * torch.einsum("bhn,buhn->buh", k[:, 5], k[:, :5])
    assert_close(torch.softmax(dist, 1), torch.softmax(dot, 1), what="gaussian kernel")
