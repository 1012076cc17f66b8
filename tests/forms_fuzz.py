"""Random well-typed anatomies for the differential fuzzer over execution forms.

`draw_program(draw)` composes a mixer `f(x[t, d]) -> y[t, d]` from the op table's families:
projections with feature maps, rotary positions, KV sharing, shifts and flips along time;
a mixing core (softmax attention with or without a mask, masked linear attention with or
without a normaliser, a sum-normalised score, a `scan`, an `ssd`, a `delta_rule`, RWKV-6's
state before the step plus a bonus for the current token) whose mask is one of the
position masks, a decay (data-dependent per head, per key channel as in gated linear
attention, or constant), a difference of masks, or none (bidirectional); the core inlined or called as a composite; an output norm, gate
and shift. Each choice is an independent draw, so hypothesis shrinks a failure to the
smallest program that shows it.

`check_forms(text, ...)` compiles the program in every form and says, per form, whether it
was refused (AnatError at compile time) or how far it is from the parallel form.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

import anatomy
from anatomy.errors import AnatError

DIMS = "d = 4, h = 2, g = 1, n = 2, p = 2"
FEATURES = ["{}", "relu({})", "elu({}) + 1", "exp({})", "sigmoid({})", "silu({})"]
POSITIVE = ["elu({}) + 1", "exp({})", "sigmoid({})"]
MASKS = ["causal(t, s)", "window(t, s, size={w})", "full(t, s)",
         "causal(t, s) - window(t, s, size=1)", "decay(la, t, s)",
         "decay(la, t, s) * window(t, s, size={w})", "decay(lc, t, s)"]
MIXERS = ["softmax", "linear", "linear_normalised", "normalise", "scan", "ssd", "delta_rule",
          "bonus"]


def draw_program(draw, st) -> str:
    """An .anat file of one or two anatomies; the last one, `f`, is the mixer."""
    lines: list[str] = []
    pick = lambda options: draw(st.sampled_from(options))
    flag = lambda: draw(st.booleans())
    src = "x"
    by = pick([0, 1, 0, 2, 0, 1, 0, -1])
    if by:
        lines.append(f"xs[t, d] = shift(x, t, by={by})")
        src = "xs"
    mixer = pick(MIXERS)
    positive = mixer in ("linear_normalised", "normalise")
    feats = POSITIVE if positive else FEATURES
    lines.append(f"q[t, h, n] = {pick(feats).format('linear(x)')}")
    if flag():  # grouped keys shared by the heads
        lines.append(f"kg[t, g, n] = linear({src})")
        lines.append(f"k[t, h, n] = {pick(feats).format('share(kg, g, h)')}")
    else:
        lines.append(f"k[t, h, n] = {pick(feats).format(f'linear({src})')}")
    if not positive and flag():
        lines.append("qr[t, h, n] = rope(q, t, n)")
        lines.append("kr[t, h, n] = rope(k, t, n)")
        q, k = "qr", "kr"
    else:
        q, k = "q", "k"
    if pick([False] * 9 + [True]):  # rarely: keys reversed in time
        lines.append(f"kf[t, h, n] = flip({k}, t)")
        k = "kf"
    lines.append("v[t, h, p] = linear(x)")
    lines.append("la[t, h] = -softplus(linear(x))")
    lines.append("param a[h] ~ uniform(0.1, 1)")
    lines.append("lc[h] = -a")
    lines.append("lh[t, h, n] = -softplus(linear(x))")
    per_channel = [] if mixer == "softmax" else ["decay(lh, t, s)"]  # gated linear attention
    mask = pick(MASKS + per_channel + ["none"]).format(w=pick([1, 2, 3]))
    core = _core(mixer, mask, q, k, pick(["la", "lc", "lh"]), pick([1, 0.5]))
    callee = []
    if flag():  # the core as a composite box
        sig = f"anatomy core({q}[t, h, n], {k}[t, h, n], v[t, h, p], la[t, h], a[h], " \
              "lh[t, h, n]) -> o[t, h, p]"
        body = [ln for ln in core if ln]
        callee = [sig, f"  dims {DIMS}", "  lc[h] = -a"] + [f"  {ln}" for ln in body] + [""]
        lines.append(f"o[t, h, p] = core({q}, {k}, v, la, a, lh)")
    else:
        lines.extend(core)
    out = "o"
    post = pick(["", "rmsnorm", "gate"] * 3 + ["layernorm_t", "length"])
    if post == "rmsnorm":
        lines.append("on[t, h, p] = rmsnorm(o, h, p)")
        out = "on"
    elif post == "gate":
        lines.append("on[t, h, p] = o * silu(linear(x, out=[h, p]))")
        out = "on"
    elif post == "layernorm_t":  # normalised over time: looks at the whole sequence
        lines.append("on[t, h, p] = layernorm(o, t, affine=false)")
        out = "on"
    elif post == "length":  # divided by the sequence length: depends on it
        lines.append("on[t, h, p] = o / size(t)")
        out = "on"
    if flag():
        lines.append(f"y0[t, d] = linear({out})")
        lines.append("y[t, d] = shift(y0, t)")
    else:
        lines.append(f"y[t, d] = linear({out})")
    body = ["anatomy f(x[t, d]) -> y[t, d]", f"  dims {DIMS}"] + [f"  {ln}" for ln in lines]
    return "\n".join(callee + body) + "\n"


def _core(mixer: str, mask: str, q: str, k: str, la: str, scale: float) -> list[str]:
    m = "" if mask == "none" else f"({mask}) * "
    if mixer == "softmax":
        opt = "" if mask == "none" else f", mask={mask}"
        return [f"score[t, s, h] = {q} * {k}[s, h, n] * {scale}",
                f"w[t, s, h] = softmax(score, s{opt})",
                "o[t, h, p] = w * v[s, h, p]"]
    if mixer == "linear":
        return [f"o[t, h, p] = {m}{q} * {k}[s, h, n] * v[s, h, p] * {scale}"]
    if mixer == "linear_normalised":
        return [f"num[t, h, p] = {m}{q} * {k}[s, h, n] * v[s, h, p]",
                f"den[t, h] = {m}{q} * {k}[s, h, n]",
                "o[t, h, p] = num / (den + 1)"]
    if mixer == "normalise":
        return [f"score[t, s, h] = {m}{q} * {k}[s, h, n]",
                "w[t, s, h] = normalise(score, s, eps=0.5)",
                "o[t, h, p] = w * v[s, h, p]"]
    if mixer == "scan":
        return [f"kv[t, h, n, p] = {k} * v", f"st[t, h, n, p] = scan(kv, {la}, t)",
                f"o[t, h, p] = {q} * st"]
    if mixer == "delta_rule":  # unit keys and a step size in (0, 1), as the models use
        gate = "0" if la == "lc" else la
        return [f"kn[t, h, n] = l2normalise({k}, n)", "beta[t, h] = sigmoid(la)",
                f"o[t, h, p] = delta_rule({q}, kn, v, beta, {gate}, t)"]
    if mixer == "bonus":  # RWKV-6: keys, values and decay shifted one step, plus the bonus
        # (unscaled, so that the chunked forms fuse it into gla(..., bonus=u) when they can)
        log = "la" if la == "la" else "lh"  # a decay per head or per key channel
        return [f"ks[t, h, n] = shift({k}, t)", "vs[t, h, p] = shift(v, t)",
                f"ls = shift({log}, t)", "param u[h, n] ~ uniform(-1, 1)",
                f"past[t, h, p] = decay(ls, t, s) * {q} * ks[s, h, n] * vs[s, h, p]",
                f"now[t, h] = {q} * u * {k}", "o[t, h, p] = past + now * v"]
    return [f"o[t, h, p] = ssd({q}, {k}, v, {la}, t)"]


@dataclass
class Outcome:
    """What each form did with one program: refused (the AnatError's message) or its
    largest relative error against the parallel form."""

    refused: dict[str, str] = field(default_factory=dict)
    error: dict[str, float] = field(default_factory=dict)

    def worst(self) -> tuple[str, float]:
        if not self.error:
            return "", 0.0
        form = max(self.error, key=self.error.get)
        return form, self.error[form]


def relative(a: torch.Tensor, b: torch.Tensor, floor: float = 1e-300) -> float:
    """max |a - b| / max(max |b|, floor): relative to the reference, or to `floor` where the
    reference is (nearly) 0 (inf when they differ and any entry is not finite)."""
    diff = (a - b).abs().max().item()
    if diff == 0:
        return 0.0
    if not torch.isfinite(a).all() or not torch.isfinite(b).all():
        return float("inf")
    return diff / max(b.abs().max().item(), floor)


@contextmanager
def chunk_size(n: int):
    """Make the rewrite engine's chunked form use chunks of n (default 64), so that short
    sequences cross chunk boundaries."""
    from anatomy.rewrite.rules import masks
    old = masks.DEFAULT_CHUNK
    masks.DEFAULT_CHUNK = n
    try:
        yield
    finally:
        masks.DEFAULT_CHUNK = old


def check_forms(text: str, seq: int, seed: int, chunk: int, pieces: list[int]) -> Outcome:
    """Compile `text`'s mixer in every form (float64) and compare each with the parallel
    form on one random batch: chunked and auto (outputs; gradients of the input and every
    parameter for chunked), step token by token, and step over a prefill then `pieces`."""
    out = Outcome()
    program = anatomy.load(text)
    d = program["f"]
    torch.manual_seed(seed)
    parallel = anatomy.compile(d, form="parallel").double()
    x = torch.randn(2, seq, 4, dtype=torch.float64, requires_grad=True)
    ref = parallel(x)
    cot = torch.randn_like(ref)
    names = ["x"] + [n for n, _ in parallel.named_parameters()]
    grads = torch.autograd.grad((ref * cot).sum(), [x] + list(parallel.parameters()),
                                allow_unused=True)
    ref_grads = dict(zip(names, grads))
    # a gradient that is exactly 0 in the parallel form (a parameter that cannot reach the
    # outputs at this length) is compared at 1e-3 of the largest gradient, not at 0: the
    # chunked form reaches it through exp(cum_t - cum_s) factors, with rounding of 1e-17
    grad_scale = 1e-3 * max((g.abs().max().item() for g in grads if g is not None),
                            default=0.0) or 1e-300
    step_module = None
    for form in ("chunked", "auto"):
        try:
            with chunk_size(chunk):
                m = anatomy.compile(d, form=form).double()
        except AnatError as e:
            out.refused[form] = e.message
            continue
        # a form may drop parameters that its outputs do not use (dead code), never add any
        missing, _ = m.load_state_dict(parallel.state_dict(), strict=False)
        assert not missing, f"{form} form has parameters the parallel form lacks: {missing}"
        y = m(x)
        out.error[form] = relative(y, ref)
        if form == "chunked":
            own = ["x"] + [n for n, _ in m.named_parameters()]
            grads = torch.autograd.grad((y * cot).sum(), [x] + list(m.parameters()),
                                        allow_unused=True)
            for name, g in zip(own, grads):
                r = ref_grads[name]
                if g is None or r is None:
                    zero = (g if r is None else r)
                    if zero is not None and zero.abs().max() > 1e-9 * grad_scale:
                        out.error[f"chunked grad {name}"] = float("inf")
                    continue
                out.error[f"chunked grad {name}"] = relative(g, r, grad_scale)
        else:
            step_module = m
    if step_module is None:
        return out
    try:
        with chunk_size(chunk):
            state = step_module.init_state(2, dtype=torch.float64)
    except AnatError as e:
        out.refused["step"] = e.message
        return out
    with torch.no_grad():
        xs = x.detach()
        ys = []
        for i in range(seq):
            y, state = step_module.step(xs[:, i:i + 1], state)
            ys.append(y)
        out.error["step"] = relative(torch.cat(ys, 1), ref.detach())
        state = step_module.init_state(2, dtype=torch.float64)
        ys, at = [], 0
        for n in pieces:
            n = min(n, seq - at)
            if n <= 0:
                break
            y, state = step_module.step(xs[:, at:at + n], state)
            ys.append(y)
            at += n
        if at < seq:
            y, state = step_module.step(xs[:, at:], state)
            ys.append(y)
        out.error["step chunks"] = relative(torch.cat(ys, 1), ref.detach())
    return out


def main(argv: list[str]) -> None:
    """`python tests/forms_fuzz.py N [SEED]`: N random programs, every form; print the
    counts of programs, forms compiled, refused and agreed, and the worst error."""
    import random
    import sys
    import time
    from collections import Counter

    from hypothesis import strategies as st

    class Draw:  # hypothesis-free random draws, for a fast counting run
        def __init__(self, rng):
            self.rng = rng

        def __call__(self, strategy, label=None):
            if hasattr(strategy, "elements"):
                return self.rng.choice(list(strategy.elements))
            assert repr(strategy) == "booleans()", strategy
            return self.rng.random() < 0.5

    n = int(argv[0]) if argv else 300
    rng = random.Random(int(argv[1]) if len(argv) > 1 else 0)
    draw = Draw(rng)
    counts: Counter = Counter()
    worst = (0.0, "", "")
    start = time.perf_counter()
    for _ in range(n):
        text = draw_program(draw, st)
        seq, chunk = rng.randint(1, 12), rng.choice([1, 2, 3, 4, 64])
        pieces = [rng.randint(1, 5) for _ in range(rng.randint(1, 4))]
        outcome = check_forms(text, seq, rng.randint(0, 2**16), chunk, pieces)
        counts["programs"] += 1
        for form in ("chunked", "auto", "step"):
            counts[f"{form} refused" if form in outcome.refused else f"{form} compiled"] += 1
        for form, err in outcome.error.items():
            key = form.split(" grad")[0] if "grad" in form else form
            counts[f"{key} {'agreed' if err <= 1e-9 else 'DISAGREED'}"] += 1
            if err > worst[0]:
                worst = (err, form, text)
    print(f"{n} programs in {time.perf_counter() - start:.0f} s")
    for key, value in sorted(counts.items()):
        print(f"  {key:24s} {value}")
    print(f"worst relative error: {worst[0]:.2e} ({worst[1]})")
    if worst[0] > 1e-9:
        print(worst[2])
    sys.stdout.flush()


if __name__ == "__main__":
    import sys
    main(sys.argv[1:])
