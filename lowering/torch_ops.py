"""The PyTorch meaning of each built-in box, as plain functions the FX graph calls.

Every function takes tensors laid out as the lowering says (static layouts are resolved at
lowering time into dims and permutations), so the functions stay small and
torch.compile-friendly. Scalars may be Python numbers or tensors.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .broadcast import expand_operands, expand_to


# -- layout ---------------------------------------------------------------------------------
def align(x: Tensor, perm: tuple[int, ...], expand_at: tuple[int, ...]) -> Tensor:
    """Permute `x` then insert size-1 dims at `expand_at` (positions in the result)."""
    if perm != tuple(range(len(perm))):
        x = x.permute(perm)
    for i in expand_at:
        x = x.unsqueeze(i)
    return x


def batch_like(x: Tensor, like: Tensor) -> Tensor:
    """An unbatched value (a parameter passed to a composite) as a batch of `like`'s size."""
    return x.unsqueeze(0).expand(like.shape[0], *x.shape)


def contract(spec: str, *operands: Tensor, scale=None, float32: bool = False,
             order: tuple | None = None, expand: tuple = ()) -> Tensor:
    """An Einstein product (torch.einsum, ordered by opt_einsum) times a scalar (`scale`,
    None: 1. Not a float default: torch.compile with dynamic shapes traces a function's float
    default as a symbolic float, then restarts its whole analysis once per call site).
    With `float32`, half-precision operands are computed and returned in float32 (the two
    sides of a normaliser's division, see `divide`). `order`: the pairwise order chosen when
    the graph was built (`pairwise_order`), followed when sizes are traced. `expand`: the
    parameters to expand over batch and time when traced (`broadcast.expand_operands`).
    """
    if float32:
        operands = tuple(upcast(o) for o in operands)
    dtype = _common_dtype(operands)
    half = [o.dtype for o in operands if o.dtype in (torch.float16, torch.bfloat16)]
    operands = [o if o.dtype == dtype else o.to(dtype) for o in operands]
    if expand:
        spec, operands = expand_operands(spec, operands, expand)
    traced = _symbolic(operands) or (order is not None and torch.compiler.is_compiling())
    if len(operands) > 2 and traced:
        y = _einsum_in_pairs(spec, operands, order)
    else:
        y = torch.einsum(spec, *operands) if len(operands) > 1 or "->" in spec else operands[0]
    if isinstance(scale, Tensor) or (scale is not None and scale != 1.0):
        y = y * scale
    # float32 decays or constants met half-precision activations: computed in float32,
    # the result in the activations' dtype
    return y.to(half[0]) if half and y.dtype != half[0] else y


# the length a symbolic (traced, dynamic) size stands for when choosing a contraction order
SYMBOLIC_SIZE_HINT = 1024


def _symbolic(tensors) -> bool:
    return any(isinstance(n, torch.SymInt) for t in tensors for n in t.shape)


def pairwise_order(spec: str, sizes) -> tuple:
    """The pairwise contraction order opt_einsum picks for `spec` with operands of these
    sizes (None, or a traced size: SYMBOLIC_SIZE_HINT), as ((operand positions, equation),
    ...) steps for `_einsum_in_pairs`."""
    import opt_einsum
    shapes = [tuple(n if isinstance(n, int) else SYMBOLIC_SIZE_HINT for n in s) for s in sizes]
    _, info = opt_einsum.contract_path(spec, *shapes, shapes=True)
    return tuple((tuple(step[0]), step[2]) for step in info.contraction_list)


def _einsum_in_pairs(spec: str, operands, order: tuple | None = None) -> Tensor:
    """torch.einsum in pairs, in `order` (default: `pairwise_order` of the operands' sizes,
    traced ones read as SYMBOLIC_SIZE_HINT). torch.einsum would ask opt_einsum with the traced
    sizes, which fixes them (an exported or compiled graph would then hold for one sequence
    length only); under torch.compile, where a traced size looks like an int and opt_einsum
    cannot be traced, the order is the one chosen when the graph was built."""
    if order is None:
        order = pairwise_order(spec, [t.shape for t in operands])
    todo = list(operands)
    for inds, equation in order:
        picked = [todo.pop(i) for i in sorted(inds, reverse=True)]
        todo.append(torch.einsum(equation, *picked))
    return todo[0]


def work_dtype(like: Tensor) -> torch.dtype:
    """The dtype constants, positions and decays are computed in: float32 for half-precision
    modules (bfloat16 rounds 1 - 2**-12 to 1, so a decay computed there is lost), else
    `like`'s own."""
    return torch.float32 if like.dtype in (torch.float16, torch.bfloat16) else like.dtype


def upcast(x: Tensor) -> Tensor:
    """float32 for a half-precision tensor, else as it is."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def divide(a, b, like: Tensor):
    """a / b computed in float32 for half-precision operands, the result in `like`'s dtype
    when that is half precision: a normaliser, whose numerator and denominator are
    accumulated in float32 (`contract(float32=True)`) and can pass float16's range where
    their ratio does not."""
    a = upcast(a) if isinstance(a, Tensor) else a
    b = upcast(b) if isinstance(b, Tensor) else b
    y = a / b
    return y.to(like.dtype) if like.dtype in (torch.float16, torch.bfloat16) else y


def _common_dtype(tensors) -> torch.dtype:
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


# -- scalars and elementwise ----------------------------------------------------------------
def _unary(name: str, tensor_fn, scalar_fn):
    """A pointwise function of tensors and scalars. In a graph being traced (torch.compile,
    torch.export), a scalar (a size read off an input, maybe symbolic: static scalars are folded
    at lowering time) becomes a 0-dim float64 tensor, so the size stays symbolic: math.log(T)
    would specialise T to the example's value. (Dynamo shows a symbolic size as an int.)"""
    def fn(x):
        if isinstance(x, Tensor):
            return tensor_fn(x)
        if torch.compiler.is_compiling() or isinstance(x, (torch.SymInt, torch.SymFloat)):
            return tensor_fn(torch.scalar_tensor(x, dtype=torch.float64))
        return scalar_fn(x)
    fn.__name__ = name
    fn.__qualname__ = name
    return fn


exp = _unary("exp", torch.exp, math.exp)
log = _unary("log", torch.log, math.log)
sqrt = _unary("sqrt", torch.sqrt, math.sqrt)
tanh = _unary("tanh", torch.tanh, math.tanh)
abs = _unary("abs", torch.abs, lambda v: -v if v < 0 else v)
relu = _unary("relu", torch.relu, lambda v: max(v, 0.0))
elu = _unary("elu", F.elu, lambda v: v if v > 0 else math.expm1(v))
gelu = _unary("gelu", F.gelu, lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2))))
softplus = _unary("softplus", F.softplus, lambda v: math.log1p(math.exp(v)))
sigmoid = _unary("sigmoid", torch.sigmoid, lambda v: 1 / (1 + math.exp(-v)))
silu = _unary("silu", F.silu, lambda v: v / (1 + math.exp(-v)))


POINTWISE = {f.__name__: f for f in (exp, log, sqrt, tanh, abs, relu, elu, gelu, softplus,
                                     sigmoid, silu)}


# -- normalisers ----------------------------------------------------------------------------
def softmax(x: Tensor, dim: int, mask: Tensor | None = None) -> Tensor:
    """Softmax along `dim`, computed in float32 for half-precision scores. With a 0/1 mask,
    masked scores count as -inf, and a row whose every entry is masked (an empty memory:
    nothing to attend to) gets weights 0, not NaN, with finite gradients."""
    dtype = x.dtype
    x = x.float() if dtype in (torch.float16, torch.bfloat16) else x
    if mask is None:
        return torch.softmax(x, dim).to(dtype)
    keep = mask != 0
    x = x.masked_fill(~keep, float("-inf"))
    x = torch.where(keep.any(dim, keepdim=True), x, 0.0)  # empty rows: finite, then zeroed
    return torch.softmax(x, dim).masked_fill(~keep, 0.0).to(dtype)


def normalise(x: Tensor, dim: int, eps: float = 0.0) -> Tensor:
    return x / (x.sum(dim, keepdim=True) + eps)


def l2normalise(x: Tensor, dim: int, eps: float = 1e-6) -> Tensor:
    return x / (x.norm(dim=dim, keepdim=True) + eps)


def layernorm(x: Tensor, dims: tuple[int, ...], eps: float, scale=None, shift=None) -> Tensor:
    dtype = x.dtype
    xf = x.float() if dtype in (torch.float16, torch.bfloat16) else x
    mean = xf.mean(dims, keepdim=True)
    var = (xf - mean).pow(2).mean(dims, keepdim=True)
    y = ((xf - mean) * torch.rsqrt(var + eps)).to(dtype)
    if scale is not None:
        y = y * scale
    if shift is not None:
        y = y + shift
    return y


def rmsnorm(x: Tensor, dims: tuple[int, ...], eps: float, scale=None) -> Tensor:
    dtype = x.dtype
    xf = x.float() if dtype in (torch.float16, torch.bfloat16) else x
    y = (xf * torch.rsqrt(xf.pow(2).mean(dims, keepdim=True) + eps)).to(dtype)
    return y * scale if scale is not None else y


# -- masks and decays: [T, S] matrices ------------------------------------------------------
def causal_mask(t: int, s: int, like: Tensor, offset=0) -> Tensor:
    """1 where key s <= query t; queries are positions offset .. offset + t - 1."""
    return torch.ones(t, s, dtype=like.dtype, device=like.device).tril(offset)


def window_mask(t: int, s: int, size: int, like: Tensor, offset=0) -> Tensor:
    ones = torch.ones(t, s, dtype=like.dtype, device=like.device)
    return ones.tril(offset) - ones.tril(offset - size)


def full_mask(t: int, s: int, like: Tensor) -> Tensor:
    return torch.ones(t, s, dtype=like.dtype, device=like.device)


def segment_decay(log_a: Tensor, dim: int, rows=None) -> Tensor:
    """exp(sum_{i=s+1..t} log_a_i) for s <= t else 0, along `dim`; the key axis is inserted
    right after `dim`. Computed in log space (cumulative-sum differences) in float32+.
    `rows`: keep only the last `rows` query positions (a step over a chunk)."""
    dtype = log_a.dtype
    la = log_a.float() if dtype in (torch.float16, torch.bfloat16) else log_a
    la = la.movedim(dim, -1)
    cum = la.cumsum(-1)
    seg = cum.unsqueeze(-1) - cum.unsqueeze(-2)  # [..., t, s]
    n = la.shape[-1]
    keep = torch.ones(n, n, dtype=torch.bool, device=la.device).tril()
    out = torch.exp(seg.masked_fill(~keep, float("-inf")))
    if rows is not None:
        out = out[..., n - rows:, :]
    return out.movedim(-2, dim).movedim(-1, dim + 1).to(dtype)


def constant_decay(log_gamma: Tensor, t: int, s: int, lead: int, offset=0) -> Tensor:
    """exp((t - s) log_gamma) for s <= t else 0, as [..lead.., t, s, ...log_gamma dims...]
    where the first `lead` dims of log_gamma (the batch) stay in front."""
    pos_t = torch.arange(t, device=log_gamma.device) + offset
    pos_s = torch.arange(s, device=log_gamma.device)
    work = torch.float64 if log_gamma.dtype == torch.float64 else torch.float32
    diff = (pos_t[:, None] - pos_s[None, :]).to(work)
    keep = diff >= 0
    shape = (1,) * lead + (t, s) + (1,) * (log_gamma.dim() - lead)
    lg = log_gamma.to(work).reshape(log_gamma.shape[:lead] + (1, 1) + log_gamma.shape[lead:])
    expo = diff.clamp(min=0).reshape(shape) * lg
    return torch.where(keep.reshape(shape), torch.exp(expo), 0.0).to(log_gamma.dtype)


def scalar_decay(t: int, s: int, log_gamma, like: Tensor, offset=0) -> Tensor:
    """exp((t - s) log_gamma) for s <= t else 0 from one number: [t, s]."""
    value = torch.as_tensor(log_gamma, dtype=work_dtype(like), device=like.device)
    return constant_decay(value, t, s, 0, offset)


# -- sequence structure ---------------------------------------------------------------------
def shift(x: Tensor, dim: int, by: int = 1) -> Tensor:
    """Move along `dim` by `by` steps (later if positive), filling with zeros."""
    n = x.shape[dim]
    k = min(-by if by < 0 else by, n)  # (`abs` here is this module's pointwise op)
    zeros = torch.zeros_like(x.narrow(dim, 0, k))
    if by >= 0:
        return torch.cat([zeros, x.narrow(dim, 0, n - k)], dim)
    return torch.cat([x.narrow(dim, k, n - k), zeros], dim)


def shift_step(x: Tensor, dim: int, previous: Tensor | None, by: int = 1
               ) -> tuple[Tensor, Tensor]:
    """`shift` over a chunk that continues a sequence: `previous` holds the last `by` steps
    before it (None: the start). Returns the shifted chunk and the new last `by` steps."""
    if previous is None:
        shape = list(x.shape)
        shape[dim] = by
        previous = x.new_zeros(shape)
    both = torch.cat([previous, x], dim)
    n = x.shape[dim]
    return both.narrow(dim, 0, n), both.narrow(dim, n, by)


def append(cache: Tensor | None, x: Tensor, dim: int) -> Tensor:
    """A key-side history: the cache so far (None: nothing yet) followed by this chunk."""
    return x if cache is None else torch.cat([cache.to(x.dtype), x], dim)


def scan(u: Tensor, log_a, dim: int, initial: Tensor | None = None,
         final: bool = False):
    """The recurrence S_t = exp(log_a_t) S_{t-1} + u_t along `dim` (S before the first
    step: `initial`, or zeros). `log_a` broadcasts against u (or is a number). Accumulates
    in float32 (float64 stays). With `final`, also returns the last S (the step state)."""
    from .scan import scan_op  # one op of any length (a loop here would fix T in a graph)
    dtype = u.dtype
    work = torch.float64 if dtype == torch.float64 else torch.float32
    u = u.to(work)
    if isinstance(log_a, Tensor):
        a = torch.exp(log_a.to(work))
    else:
        a = torch.full((1,) * u.dim(), math.exp(log_a), dtype=work, device=u.device)
    shape = torch.broadcast_shapes(u.shape, a.shape)
    if initial is not None:
        initial = expand_to(initial.to(work), shape[:dim] + shape[dim + 1:])
    states = scan_op(u.expand(shape), expand_to(a, shape), dim, initial)
    y = states.to(dtype)
    return (y, states.select(dim, -1)) if final else y


def flip(x: Tensor, dim: int) -> Tensor:
    return torch.flip(x, (dim,))


def share(x: Tensor, dim: int, heads: int) -> Tensor:
    """KV sharing: groups along `dim` repeated so that head i reads group i // (H/G)."""
    groups = x.shape[dim]
    return x.repeat_interleave(heads // groups, dim=dim)


def index(n: int, like: Tensor, offset=0) -> Tensor:
    """offset, offset + 1, ..., offset + n - 1 (the step form's query positions)."""
    return torch.arange(n, device=like.device, dtype=work_dtype(like)) + offset




def rope(x: Tensor, time_dim: int, feature_dim: int, base: float = 10000.0,
         offset=0) -> Tensor:
    """Rotary encoding, GPT-NeoX "rotate half" pairs (i, i + n/2), angle t * base^(-2i/n);
    positions start at `offset`."""
    return _rotate(x, time_dim, feature_dim, base, None, False, offset)


def xpos(x: Tensor, time_dim: int, feature_dim: int, base: float = 10000.0,
         scale_base: float = 512.0, downscale: bool = False, offset=0) -> Tensor:
    """Rotary encoding with the xPos scale zeta_i^(t / scale_base), zeta_i = (2i/n + 0.4)/1.4
    (Sun et al. 2022); keys are divided by it (downscale)."""
    return _rotate(x, time_dim, feature_dim, base, scale_base, downscale, offset)


def _rotate(x, time_dim, feature_dim, base, scale_base, downscale, offset):
    t, n = x.shape[time_dim], x.shape[feature_dim]
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    pos = torch.arange(t, device=x.device, dtype=work) + offset
    pairs = torch.arange(n // 2, device=x.device, dtype=work)
    inv_freq = base ** (-pairs * 2 / n)
    angles = pos[:, None] * inv_freq[None, :]  # [T, n/2]
    cos, sin = angles.cos(), angles.sin()
    if scale_base is not None:
        zeta = (pairs * 2 / n + 0.4) / 1.4
        scale = zeta[None, :] ** (pos[:, None] / scale_base)
        if downscale:
            scale = 1 / scale
        cos, sin = cos * scale, sin * scale
    xm = x.movedim((time_dim, feature_dim), (-2, -1))
    x1, x2 = xm[..., : n // 2], xm[..., n // 2:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    out = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)
    return out.movedim((-2, -1), (time_dim, feature_dim))


def concat(dim: int, *parts: Tensor) -> Tensor:
    """Concatenate along `dim`, broadcasting the other dims (a part may lack some)."""
    shape = list(torch.broadcast_shapes(*[p.shape[:dim] + (1,) + p.shape[dim + 1:]
                                          for p in parts]))
    out = []
    for p in parts:
        shape[dim] = p.shape[dim]
        out.append(p.expand(shape))
    return torch.cat(out, dim)


def reshape(x: Tensor, n_kept: int, sizes: tuple) -> Tensor:
    """Keep the first `n_kept` dims; the rest, merged row-major, become dims of `sizes`."""
    return x.reshape(tuple(x.shape[:n_kept]) + tuple(sizes))


def split(x: Tensor, dim: int, sizes: tuple[int, ...]) -> tuple[Tensor, ...]:
    return tuple(torch.split(x, list(sizes), dim))


def attention(q: Tensor, k: Tensor, v: Tensor, n_state: int, value_sizes: tuple,
              scale=1.0, is_causal: bool = False) -> Tensor:
    """softmax(scale q k^T (+ causal mask)) v through scaled_dot_product_attention.
    Inputs [B, heads..., T, features...]; missing heads (MQA) broadcast."""
    q, k, v = _attention_inputs(q, k, v, n_state, value_sizes)
    if isinstance(scale, Tensor):  # a function of a size in a traced graph (see _unary)
        q, scale = q * scale, 1.0
    out = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal, scale=float(scale))
    return _attention_output(out, value_sizes)


def _attention_inputs(q, k, v, n_state, value_sizes):
    def flat(x, n):
        return x.reshape(x.shape[:x.dim() - n] + (-1,)) if n != 1 else x
    q, k = flat(q, n_state), flat(k, n_state)
    v = flat(v, len(value_sizes))
    if n_state == 0:
        q, k = q.unsqueeze(-1), k.unsqueeze(-1)
    if not value_sizes:
        v = v.unsqueeze(-1)
    heads = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    dtype = _common_dtype((q, k, v))
    return [x.expand(heads + x.shape[-2:]).to(dtype) for x in (q, k, v)]


def _attention_output(out, value_sizes):
    if not value_sizes:
        return out.squeeze(-1)
    return out.reshape(out.shape[:-1] + tuple(value_sizes)) if len(value_sizes) != 1 else out


# -- the chunked (kernel) form's plumbing ---------------------------------------------------
def kernel_layout(x: Tensor, n_heads: int, n_feats: int, expand_heads: int | None) -> Tensor:
    """[B, T, heads?, feats...] -> [B, T, G, F] for anatomy.kernels (G = 1 without heads)."""
    if n_heads == 0:
        x = x.unsqueeze(2)
    if n_feats == 0:
        x = x.unsqueeze(-1)
    elif n_feats > 1:
        x = x.reshape(x.shape[:3] + (-1,))
    if expand_heads is not None and x.shape[2] == 1 and expand_heads != 1:
        x = x.expand(x.shape[0], x.shape[1], expand_heads, x.shape[3])
    return x


def ones_values(k: Tensor, heads: int, value: float = 1.0) -> Tensor:
    """Constant values, [B, T, H, 1]: sum_s L q.k (a linear-attention normaliser) as SSD."""
    return torch.full((k.shape[0], k.shape[1], heads, 1), float(value), dtype=k.dtype,
                      device=k.device)


def constant_log_decay(v: Tensor, value: float) -> Tensor:
    """The same log a everywhere (0: the causal mask as a decay), [B, T, H]."""
    return torch.full(v.shape[:3], float(value), dtype=torch.float32, device=v.device)


def as_kernel_gate(la: Tensor, v: Tensor, has_heads: bool, state: tuple) -> Tensor:
    """A gate or log-decay laid out [B|1, T|1, heads?|1, state...|1] broadcast to a kernel's
    [B, T, H] (no state axes) or [B, T, H, N] (the state axes flattened into N)."""
    if not has_heads:
        la = la.unsqueeze(2)
    la = torch.broadcast_to(la, tuple(v.shape[:3]) + tuple(state))
    return la.reshape(tuple(v.shape[:3]) + (-1,)) if state else la


def unflatten_values(y: Tensor, has_heads: bool, sizes: tuple) -> Tensor:
    """The kernel's [B, T, H, P] back to [B, T, heads?, values...]."""
    y = y.reshape(y.shape[:3] + tuple(sizes)) if len(sizes) != 1 else y
    if not has_heads:
        y = y.squeeze(2)
    return y


def state_entry(state: dict, key: str):
    """An entry of a step state; missing entries (a fresh state) start as None (or 0)."""
    return state.get(key, 0 if key == "pos" else None)


def make_state(keys: tuple[str, ...], *values) -> dict:
    return dict(zip(keys, values))


# -- parameters -------------------------------------------------------------------------------
def init_param(p: Tensor, init: tuple, fan_in: int) -> None:
    """Initialise a parameter in place from the diagram's initialiser spec."""
    name, *args = init
    with torch.no_grad():
        if name == "zeros":
            p.zero_()
        elif name == "ones":
            p.fill_(1.0)
        elif name == "constant":
            p.fill_(float(args[0]))
        elif name == "normal":
            mean, std = (0.0, args[0]) if len(args) == 1 else (args or [0.0, 0.02])
            p.normal_(mean, std)
        elif name == "uniform":
            p.uniform_(args[0], args[1])
        elif name == "log_uniform":
            p.uniform_(args[0], args[1]).log_()
        elif name == "inv_softplus_log_uniform":
            dt = torch.empty_like(p).uniform_(math.log(args[0]), math.log(args[1])).exp()
            p.copy_(dt + torch.log(-torch.expm1(-dt)))
        elif name == "fan_in":
            bound = 1 / math.sqrt(max(fan_in, 1))
            p.uniform_(-bound, bound)
        else:  # pragma: no cover - the parser only admits known initialisers
            raise ValueError(f"unknown initialiser {name}")
