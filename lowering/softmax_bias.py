"""Softmax attention with masks and additive biases that are functions of positions and of
per-token decays: causal, sliding window, ALiBi, the Forgetting Transformer's cumulative
log forget gate, soft-capping and other score modifications.

The score a query row sees is one small expression (`Expr`, plain tuples, so a compiled
module stays picklable and traceable) of the scaled q.k score, the query and key positions
and tensors laid out [B, heads..., T|1, S|1] ("leaves"):

    ("score",)                   scale * q.k
    ("t",), ("s",)               absolute query / key positions
    ("const", c)                 a number
    ("leaf", i)                  leaves[i], indexed by (query row, key column)
    ("segsum", i)                c[t] - c[s] for s <= t else -inf: the log of a decay mask,
                                 leaves[i] = c, the cumulative log-decays over the keys
    ("ramp", e)                  (t - s) * e for s <= t else -inf: the log of a constant decay
    (op, e, ...)                 add, sub, mul, div, pow, neg and the pointwise activations

The same expression runs three ways (`softmax_attention` chooses):
- `sdpa`: the mask and bias materialised as a float [.., T, S] mask for
  scaled_dot_product_attention;
- `chunked`: our own query-chunked softmax (`ChunkedSoftmax`): each block of query rows
  sees only the keys its mask can keep, so memory is O(T * chunk) and the blocks above
  the diagonal (or outside the window) are never computed; its backward recomputes each
  block from the saved log-sum-exp;
- `flex`: FlexAttention with a block mask, on CUDA (compiled on the CPU, torch 2.13's
  FlexAttention kernel returned wrong values there: the CPU compiles the materialised mask).
"""

from __future__ import annotations

import functools
import math
import operator

import torch
import torch.nn.functional as F
from torch import Tensor

from . import torch_ops as ops

_BINARY = {"add": operator.add, "sub": operator.sub, "mul": operator.mul,
           "div": operator.truediv, "pow": operator.pow}
# elements of one block's score matrix (rows x keys x batch-and-heads): sets the row count
BLOCK_ELEMENTS = 1 << 22
# up to this many keys the CPU runs SDPA with a materialised mask, forward and backward: at
# T <= 4k the chunked softmax measured 1.0-1.4x its time at 2k and 0.8-1.4x at 4k (same
# process, interleaved, a shared machine; bench/softmax_bias.py), so never slower there
SDPA_MAX_T = {"cpu": 4096}


def _walk(expr: tuple, score, t_pos, s_pos, read):
    """The score expression at query positions t_pos and key positions s_pos. `read(node)`
    gives a `leaf` or `segsum` node: the only nodes whose reading depends on where the
    expression is evaluated (a block of rows and columns, or one FlexAttention point)."""
    head = expr[0]
    if head == "score":
        return score
    if head == "t":
        return t_pos
    if head == "s":
        return s_pos
    if head == "const":
        return expr[1]
    if head in ("leaf", "segsum"):
        return read(expr)
    if head == "ramp":
        slope = _walk(expr[1], score, t_pos, s_pos, read)
        diff = t_pos - s_pos
        return torch.where(diff >= 0, diff.clamp(min=0) * slope, float("-inf"))
    args = [_walk(e, score, t_pos, s_pos, read) for e in expr[1:]]
    if head == "neg":
        return -args[0]
    if head in _BINARY:
        return _BINARY[head](*args)
    return ops.POINTWISE[head](args[0])


def evaluate(expr: tuple, score, leaves, t_pos: Tensor, s_pos: Tensor, rows: slice,
             cols: slice, q_base: int):
    """The expression on one block: query rows `rows` (query-local), key columns `cols`;
    t_pos [R, 1] and s_pos [1, C] are absolute positions. `q_base`: the key index of the
    first query (queries are the last T of the keys)."""
    # a partial, not a closure: torch.compile turns a closure's cells into constants, which
    # would fix the slices' traced lengths (one recompile per sequence length)
    read = functools.partial(_read_block, leaves, t_pos, s_pos, rows, cols, q_base)
    return _walk(expr, score, t_pos, s_pos, read)


def _read_block(leaves, t_pos, s_pos, rows: slice, cols: slice, q_base, node):
    """A `leaf` or `segsum` node of the expression on one block (see `evaluate`)."""
    if node[0] == "segsum":
        c = leaves[node[1]]
        c_t = c[..., q_base + rows.start:q_base + rows.stop]
        seg = c_t.unsqueeze(-1) - c[..., cols].unsqueeze(-2)
        return seg.masked_fill(s_pos > t_pos, float("-inf"))
    x = leaves[node[1]]
    if isinstance(x, Tensor) and x.dim() >= 2:
        x = x[..., rows, :] if x.shape[-2] > 1 else x
        x = x[..., cols] if x.shape[-1] > 1 else x
    return x


def uses(expr: tuple, head: str) -> bool:
    if expr[0] == head:
        return True
    return expr[0] not in ("const", "leaf", "segsum") and \
        any(isinstance(e, tuple) and uses(e, head) for e in expr[1:])


def _positions(pos, q_base: int, rows: slice, cols: slice, work, device):
    t = torch.arange(rows.start, rows.stop, device=device, dtype=work) + (pos + q_base)
    s = torch.arange(cols.start, cols.stop, device=device, dtype=work) + pos
    return t[:, None], s[None, :]


def _keep(t_pos, s_pos, causal: bool, window: int | None):
    if not causal:
        return None
    keep = s_pos <= t_pos
    return keep & (t_pos - s_pos < window) if window is not None else keep


def _block_scores(expr, q, k, leaves, pos, q_base, rows, cols, scale, causal, window):
    """Scores of query rows `rows` against keys `cols`, masked to -inf (float32+)."""
    work = torch.float64 if q.dtype == torch.float64 else torch.float32
    score = scale * (q[..., rows, :].to(work) @ k[..., cols, :].to(work).transpose(-1, -2))
    t_pos, s_pos = _positions(pos, q_base, rows, cols, work, q.device)
    score = evaluate(expr, score, leaves, t_pos, s_pos, rows, cols, q_base)
    keep = _keep(t_pos, s_pos, causal, window)
    return score if keep is None else score.masked_fill(~keep, float("-inf"))


def _key_range(rows: slice, q_base: int, n_keys: int, causal: bool, window: int | None):
    stop = min(n_keys, q_base + rows.stop) if causal else n_keys
    start = max(0, q_base + rows.start - window + 1) if causal and window is not None else 0
    return slice(start, max(start, stop))


def _row_blocks(n_rows: int, n_keys: int, lead: int):
    step = max(16, min(n_rows, BLOCK_ELEMENTS // max(1, n_keys * lead)))
    return [slice(i, min(n_rows, i + step)) for i in range(0, n_rows, step)]


def _block(expr, q, k, v, leaves, pos, q_base, rows, cols, scale, causal, window):
    """The output rows `rows`, from their keys `cols` (every key they may see): SDPA with
    the block's bias as a float mask, or the softmax written out for other expressions."""
    if not _additive(expr):
        score = _block_scores(expr, q, k, leaves, pos, q_base, rows, cols, scale, causal,
                              window)
        return (_safe_softmax(score) @ v[..., cols, :].to(score.dtype)).to(q.dtype)
    work = torch.float64 if q.dtype == torch.float64 else torch.float32
    t_pos, s_pos = _positions(pos, q_base, rows, cols, work, q.device)
    zero = torch.zeros((), dtype=work, device=q.device)
    bias = evaluate(expr, zero, leaves, t_pos, s_pos, rows, cols, q_base)
    bias = torch.as_tensor(bias, dtype=work, device=q.device)
    keep = _keep(t_pos, s_pos, causal, window)
    if keep is not None:
        bias = bias.masked_fill(~keep, float("-inf"))
    q_b, k_b, v_b = q[..., rows, :], k[..., cols, :], v[..., cols, :]
    bias = bias.to(q.dtype).expand(q_b.shape[:-2] + (q_b.shape[-2], k_b.shape[-2]))
    return F.scaled_dot_product_attention(q_b, k_b, v_b, attn_mask=bias, scale=scale)


class ChunkedSoftmax(torch.autograd.Function):
    """softmax(expr(score, positions, leaves) + mask) v, a block of query rows at a time,
    each against only the keys its mask keeps. Saves only the inputs: the backward
    recomputes one block at a time (memory O(T * block), like activation checkpointing)."""

    @staticmethod
    def forward(ctx, meta, q, k, v, *leaves):
        expr, pos, scale, causal, window = meta
        n_rows, n_keys = q.shape[-2], k.shape[-2]
        q_base = n_keys - n_rows
        out = q.new_empty(q.shape[:-1] + v.shape[-1:])
        for rows in _row_blocks(n_rows, n_keys, math.prod(q.shape[:-2])):
            cols = _key_range(rows, q_base, n_keys, causal, window)
            out[..., rows, :] = _block(expr, q, k, v, leaves, pos, q_base, rows, cols, scale,
                                       causal, window)
        ctx.meta = meta
        ctx.save_for_backward(q, k, v, *leaves)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, *leaves = ctx.saved_tensors
        expr, pos, scale, causal, window = ctx.meta
        n_rows, n_keys = q.shape[-2], k.shape[-2]
        q_base = n_keys - n_rows
        need = ctx.needs_input_grad[1:]
        grads = [torch.zeros_like(x) if n else None for x, n in zip((q, k, v, *leaves), need)]
        for rows in _row_blocks(n_rows, n_keys, math.prod(q.shape[:-2])):
            cols = _key_range(rows, q_base, n_keys, causal, window)
            with torch.enable_grad():
                ins = [x.detach().requires_grad_(n) if x.is_floating_point() else x
                       for x, n in zip((q, k, v, *leaves), need)]
                o = _block(expr, ins[0], ins[1], ins[2], ins[3:], pos, q_base, rows, cols,
                           scale, causal, window)
                wrt = [x for x in ins if x.requires_grad]
                got = iter(torch.autograd.grad(o, wrt, grad_out[..., rows, :],
                                               allow_unused=True))
            for i, x in enumerate(ins):
                if x.requires_grad:
                    g = next(got)
                    if g is not None:
                        grads[i] += g
        return (None, *grads)


def chunked(expr, q, k, v, leaves, pos=0, scale=1.0, causal=False, window=None):
    return ChunkedSoftmax.apply((expr, pos, float(scale), causal, window), q, k, v, *leaves)


def materialised(expr, q, k, v, leaves, pos=0, scale=1.0, causal=False, window=None):
    """scaled_dot_product_attention with the mask and bias as one float mask [.., T, S]
    (a score modification other than a bias needs the scores: then the math, written out)."""
    n_rows, n_keys = q.shape[-2], k.shape[-2]
    rows, cols = slice(0, n_rows), slice(0, n_keys)
    q_base = n_keys - n_rows
    work = torch.float64 if q.dtype == torch.float64 else torch.float32
    t_pos, s_pos = _positions(pos, q_base, rows, cols, work, q.device)
    keep = _keep(t_pos, s_pos, causal, window)
    if not _additive(expr):
        score = _block_scores(expr, q, k, leaves, pos, q_base, rows, cols, scale, causal,
                              window)
        return _safe_softmax(score) @ v.to(score.dtype)
    zero = torch.zeros((), dtype=work, device=q.device)
    bias = evaluate(expr, zero, leaves, t_pos, s_pos, rows, cols, q_base)
    bias = torch.as_tensor(bias, dtype=work, device=q.device)
    if keep is not None:
        bias = bias.masked_fill(~keep, float("-inf"))
    bias = bias.to(q.dtype).expand(q.shape[:-2] + (n_rows, n_keys))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=float(scale))


def _safe_softmax(score: Tensor) -> Tensor:
    m = score.amax(-1, keepdim=True)
    p = torch.exp(score - torch.where(torch.isfinite(m), m, 0.0))
    return p / p.sum(-1, keepdim=True).clamp(min=torch.finfo(p.dtype).tiny)


def _additive(expr: tuple) -> bool:
    """score + a bias (that does not depend on the score)?"""
    if expr == ("score",):
        return True
    if expr[0] in ("add", "sub"):
        a, b = expr[1], expr[2]
        if uses(a, "score") and not uses(b, "score"):
            return _additive(a)
        return expr[0] == "add" and uses(b, "score") and not uses(a, "score") and \
            _additive(b)
    return False


def flex(expr, q, k, v, leaves, pos=0, scale=1.0, causal=False, window=None):
    """FlexAttention with the expression as its score_mod and the mask as a block mask."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    lead = q.shape[:-2]
    n_rows, n_keys = q.shape[-2], k.shape[-2]
    q_base, pos = _offset(n_keys - n_rows, q.device), _offset(pos, q.device)
    flat = [_flat_leaf(x, lead) for x in leaves]
    q, k, v = (x.reshape((-1, 1) + x.shape[-2:]) for x in (q, k, v))

    def score_mod(score, b, h, q_idx, kv_idx):
        t_pos, s_pos = q_idx + q_base + pos, kv_idx + pos
        return _point(expr, score, flat, b, q_idx, kv_idx, t_pos, s_pos, q_base)

    def mask_mod(b, h, q_idx, kv_idx):
        keep = kv_idx <= q_idx + q_base
        return keep & (q_idx + q_base - kv_idx < window) if window is not None else keep

    block_mask = create_block_mask(mask_mod, None, None, n_rows, n_keys,
                                   device=q.device) if causal else None
    out = flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask,
                         scale=float(scale))
    return out.reshape(lead + out.shape[-2:])


def _offset(n, device):
    """A position offset for FlexAttention's closures: a literal 0 where it is 0 (the whole
    sequence at once), else, while compiling, a 0-d tensor: Inductor's kernel took no
    symbolic number in its closures (dynamic lengths, seen on the CPU, torch 2.13)."""
    if isinstance(n, Tensor):
        return n
    if n == 0:
        return 0
    return torch.as_tensor(n, device=device) if torch.compiler.is_compiling() else n


def _flat_leaf(x, lead):
    """A leaf [B, heads..., T|1, S|1] (or a segsum's [B, heads..., S]) as [lead, ...]."""
    if not isinstance(x, Tensor) or x.dim() == 0:
        return x
    n = len(lead)
    shape = x.shape[n:]
    return x.expand(lead + shape).reshape((-1,) + shape)


def _point(expr, score, leaves, b, q_idx, kv_idx, t_pos, s_pos, q_base):
    """The expression at one (batch, query, key) point: FlexAttention's score_mod."""
    def read(node):
        if node[0] == "segsum":
            c = leaves[node[1]]
            seg = c[b, q_idx + q_base] - c[b, kv_idx]
            return torch.where(kv_idx <= q_idx + q_base, seg, float("-inf"))
        x = leaves[node[1]]
        if not isinstance(x, Tensor) or x.dim() == 0:
            return x
        return x[b, q_idx if x.shape[-2] > 1 else 0, kv_idx if x.shape[-1] > 1 else 0]
    return _walk(expr, score, t_pos, s_pos, read)


def choose(q: Tensor, k: Tensor, v: Tensor, leaves, causal: bool,
           window: int | None) -> str:
    """The path for these inputs: FlexAttention on CUDA. On the CPU: while the module is
    being compiled (torch.compile), the materialised mask, which compiles (Inductor's CPU
    FlexAttention kernel, torch 2.13, returned wrong values or NaN at lengths that are not a
    multiple of its block, varying from run to run: never used); eagerly, sdpa with a
    materialised mask up to SDPA_MAX_T keys, else the chunked softmax, whose memory stays
    O(T * block)."""
    if q.device.type == "cuda":
        return "flex"
    if torch.compiler.is_compiling() or k.shape[-2] <= SDPA_MAX_T.get(q.device.type, 0):
        return "sdpa"
    return "chunked"


PATHS = {"sdpa": materialised, "chunked": chunked, "flex": flex}


def softmax_attention(q: Tensor, k: Tensor, v: Tensor, n_state: int, value_sizes: tuple,
                      expr: tuple, *leaves, scale=1.0, causal: bool = False,
                      window: int | None = None, end=None, path: str | None = None) -> Tensor:
    """softmax_s(expr(scale q.k, t, s, leaves) masked) v. q [B, heads..., T, features...],
    k, v [B, heads..., S, ...] (the queries are the last T keys); `end`: the position after
    the last key (None: S, the keys start at 0). Missing heads (MQA) broadcast."""
    q, k, v = ops._attention_inputs(q, k, v, n_state, value_sizes)
    pos = 0 if end is None else end - k.shape[-2]
    path = path or choose(q, k, v, leaves, causal, window)
    out = PATHS[path](expr, q, k, v, leaves, pos=pos, scale=scale, causal=causal,
                      window=window)
    return ops._attention_output(out.to(q.dtype), value_sizes)


def cumulative_log_decay(log_a: Tensor, history: Tensor | None = None) -> Tensor:
    """c = cumsum(log_a) along the last dim (time), in float32 (float64 stays). With the
    c of the keys before this chunk (`history`, the step form), continues from its last
    entry and returns the history followed by this chunk's c."""
    work = torch.float64 if log_a.dtype == torch.float64 else torch.float32
    c = log_a.to(work).cumsum(-1)
    if history is None or history.shape[-1] == 0:
        return c
    history = history.to(work)
    return torch.cat([history, c + history[..., -1:]], -1)


def keep_last(x: Tensor, dim: int, n: int) -> Tensor:
    """The last `n` entries along `dim`: a sliding window's bounded cache."""
    return x.narrow(dim, max(0, x.shape[dim] - n), min(n, x.shape[dim]))
