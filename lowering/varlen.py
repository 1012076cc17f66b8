"""Variable length: padded batches (`attention_mask` [B, T]) and packed sequences
(`cu_seqlens`, fla's convention) for every form of a compiled anatomy, and for `step`.

What they mean: each sequence runs as if it were alone. Its positions start at 0 (rope,
xpos, index, shift), its causal masks and decays start at its first token, its softmax sees
only its own keys, and `size(t)` is its own length.

- `module(x, attention_mask=m)`: m [B, T], 1 (True) for a real token, 0 for padding (left,
  right or anywhere: a row's real tokens, in order, are its sequence). Outputs at padded
  positions are zero.
- `module(x, cu_seqlens=c)`: x holds N sequences packed along time with batch 1; c is
  [N + 1] integer offsets, c[0] = 0, c[N] = the packed length (fla's convention). The
  output is the N sequences' outputs, packed the same way.
- `module.step(x, state, attention_mask=m)` / `step(x, state, cu_seqlens=c)`: each row (each
  packed sequence) continues its own row of `state` (left-padded prefill, then decoding).
  Rows that have advanced by different counts no longer share one position, so the state
  becomes ragged: {"rows": [one batch-1 state per row]}, which later steps accept.

How it runs: lowering/packed.py runs a packed (or unpadded) batch through one graph when
every box works token by token or is a chunked kernel (its state reset at each boundary);
anything else runs sequence by sequence (`split_forward`). `step` always runs row by row.
"""

from __future__ import annotations

import functools
import inspect
from itertools import pairwise

import torch
from torch import Tensor

from anatomy.errors import AnatError

from .graph import BATCH

MASK_HINT = "attention_mask is [batch, time]: 1 (True) for a real token, 0 for padding"
CU_HINT = ("cu_seqlens is fla's convention: int offsets [num_seqs + 1] from 0 to the packed "
           "length, with the sequences packed along time in a batch of 1")


def time_dims(module, ports) -> list[int | None]:
    """For each port, the dim of its [batch, ...] tensor that is the time axis (None: it
    has none). A port with two time axes is refused."""
    d, find = module.diagram, module.shapes.sizes.find
    t = d.time_axis
    if t is None:
        raise AnatError(f"{d.name} has no time axis, so no variable-length sequences",
                        hint="attention_mask and cu_seqlens split inputs along time")
    fixed = module.shapes.size(t)
    if fixed is not None:
        raise AnatError(f"{d.name} is compiled for sequences of exactly {fixed} tokens "
                        f"(dim {t} = {fixed}), so not for sequences of other lengths",
                        hint=f"compile without a dim for {t} to take any length")
    out = []
    for p in ports:
        dims = [i + 1 for i, a in enumerate(p.axes) if find(a) == find(t)]
        if len(dims) > 1:
            raise AnatError(f"{d.name}: port `{p.name}` has {len(dims)} time axes, so it "
                            f"cannot be split into sequences", p.loc, hint="run each sequence alone")
        out.append(dims[0] if dims else None)
    return out


def _length(inputs, dims) -> tuple[int, int]:
    """(batch, time) of the inputs."""
    timed = [(x, d) for x, d in zip(inputs, dims) if d is not None and isinstance(x, Tensor)]
    if not timed:
        raise AnatError("variable-length inputs need an input with a time axis")
    x, d = timed[0]
    if x.dim() <= d:
        raise AnatError(f"inputs are laid out [batch, time, ...]; got shape {tuple(x.shape)}")
    return x.shape[0], x.shape[d]


def mask_rows(mask, batch: int, time: int) -> list[Tensor]:
    """The positions of each row's real tokens (a [n] long tensor per row)."""
    if not isinstance(mask, Tensor):
        raise AnatError(f"attention_mask must be a tensor, got {type(mask).__name__}",
                        hint=MASK_HINT)
    if tuple(mask.shape) != (batch, time):
        raise AnatError(f"attention_mask has shape {tuple(mask.shape)}, but the inputs are "
                        f"batch {batch}, time {time}", hint=MASK_HINT)
    if mask.dtype != torch.bool:
        if mask.is_floating_point() or mask.is_complex() or \
                bool(((mask != 0) & (mask != 1)).any()):
            raise AnatError("attention_mask must hold 0 and 1 (or be boolean)", hint=MASK_HINT)
        mask = mask != 0
    return [row.nonzero().flatten() for row in mask]


def segments(cu_seqlens, batch: int, time: int) -> list[tuple[int, int]]:
    """(start, end) of each packed sequence."""
    if isinstance(cu_seqlens, Tensor):
        if cu_seqlens.dim() != 1 or cu_seqlens.is_floating_point() or \
                cu_seqlens.dtype == torch.bool:
            raise AnatError(f"cu_seqlens must be a 1-d integer tensor, got shape "
                            f"{tuple(cu_seqlens.shape)} {cu_seqlens.dtype}", hint=CU_HINT)
        cu = [int(c) for c in cu_seqlens.tolist()]
    elif isinstance(cu_seqlens, (list, tuple)) and all(
            isinstance(c, int) and not isinstance(c, bool) for c in cu_seqlens):
        cu = list(cu_seqlens)
    else:
        raise AnatError(f"cu_seqlens must be an integer tensor, got "
                        f"{type(cu_seqlens).__name__}", hint=CU_HINT)
    if batch != 1:
        raise AnatError(f"packed sequences (cu_seqlens) take a batch of 1, got {batch}",
                        hint=CU_HINT)
    if len(cu) < 2 or cu[0] != 0 or cu[-1] != time:
        raise AnatError(f"cu_seqlens must run from 0 to the packed length {time}, got "
                        f"{cu[:4]}{'...' if len(cu) > 4 else ''} ({len(cu)} offsets)",
                        hint=CU_HINT)
    if any(b < a for a, b in pairwise(cu)):
        raise AnatError("cu_seqlens must not decrease", hint=CU_HINT)
    return list(pairwise(cu))


def _take(inputs, dims, row: int | None, idx=None, span=None) -> list:
    """One sequence's inputs: batch row `row` (None: all), time positions `idx` or `span`."""
    out = []
    for x, d in zip(inputs, dims):
        if isinstance(x, Tensor) and row is not None and x.dim() > 0:
            x = x[row:row + 1]
        if d is not None and isinstance(x, Tensor):
            x = x.index_select(d, idx) if idx is not None else x.narrow(d, span[0],
                                                                         span[1] - span[0])
        out.append(x)
    return out


def _outputs(result) -> list:
    return list(result) if isinstance(result, tuple) else [result]


def _result(outs: list):
    return outs[0] if len(outs) == 1 else tuple(outs)


def padded_rows(rows: list, idxs: list[Tensor], time: int, out_dims: list) -> list:
    """Per-row outputs (None: an empty row) scattered into zero-padded [B, T, ...] outputs."""
    first = next(r for r in rows if r is not None)
    outs = []
    for j, d in enumerate(out_dims):
        parts = []
        for r, idx in zip(rows, idxs):
            like = first[j]
            shape = list(like.shape)
            if d is not None:
                shape[d] = time
            if r is None:
                parts.append(like.new_zeros(shape))
            elif d is None:
                parts.append(r[j])
            else:
                parts.append(r[j].new_zeros(shape).index_copy(d, idx, r[j]))
        outs.append(torch.cat(parts, 0))
    return outs


def split_forward(module, run, inputs: list, attention_mask=None, cu_seqlens=None):
    """`run(*inputs)` on each sequence alone, the outputs padded or packed back."""
    d = module.diagram
    in_dims = time_dims(module, d.inputs)
    out_dims = time_dims(module, d.outputs)
    batch, time = _length(inputs, in_dims)
    if cu_seqlens is not None:
        if None in out_dims:
            raise AnatError(f"{d.name} has an output without a time axis: packed sequences "
                            f"would each give one", hint="use attention_mask instead")
        spans = [s for s in segments(cu_seqlens, batch, time) if s[1] > s[0]]
        if len(spans) <= 1:
            return run(*inputs)
        pieces = [_outputs(run(*_take(inputs, in_dims, None, span=s))) for s in spans]
        return _result([torch.cat([p[j] for p in pieces], out_dims[j])
                        for j in range(len(out_dims))])
    idxs = mask_rows(attention_mask, batch, time)
    if all(len(i) == time for i in idxs):  # no padding: the batch as it is
        return run(*inputs)
    rows = [_outputs(run(*_take(inputs, in_dims, b, idx=idx))) if len(idx) else None
            for b, idx in enumerate(idxs)]
    if all(r is None for r in rows):  # nothing real: zeros shaped like one token's output
        one = _outputs(run(*_take(inputs, in_dims, 0, span=(0, 1))))
        return _result([torch.zeros_like(o).expand(
            *[batch if i == 0 else time if i == dj else n for i, n in enumerate(o.shape)])
            .contiguous() for o, dj in zip(one, out_dims)])
    return _result(padded_rows(rows, idxs, time, out_dims))


def with_varlen(generated):
    """Wrap a generated `forward(self, *inputs)` so that it also takes `attention_mask` and
    `cu_seqlens` (keyword only; its signature says so, for torch.export)."""
    if getattr(generated, "_anatomy_varlen", False):
        return generated

    @functools.wraps(generated)
    def forward(self, *args, attention_mask=None, cu_seqlens=None, **kwargs):
        if attention_mask is None and cu_seqlens is None:
            return generated(self, *args, **kwargs)
        if attention_mask is not None and cu_seqlens is not None:
            raise AnatError("give attention_mask or cu_seqlens, not both",
                            hint="unpad a padded batch into packed sequences, or pad them")
        names = [p.name for p in self.diagram.inputs]
        inputs = list(args) + [kwargs.pop(n) for n in names[len(args):] if n in kwargs]
        if kwargs or len(inputs) != len(names):
            return generated(self, *args, **kwargs)  # its own error for the wrong inputs
        return varlen_forward(self, generated, inputs, attention_mask, cu_seqlens)

    sig = inspect.signature(generated)
    extra = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None)
             for n in ("attention_mask", "cu_seqlens")]
    forward.__signature__ = sig.replace(parameters=[*sig.parameters.values(), *extra])
    forward._anatomy_varlen = True
    return forward


def varlen_forward(module, generated, inputs: list, attention_mask, cu_seqlens):
    """The forward of a padded or packed batch (see the module docstring): through the
    packed graph where the module has one (lowering/packed.py), else sequence by sequence."""
    from .packed import packed_graph_module
    gm = packed_graph_module(module)
    if gm is not None:
        result = _packed(module, gm, inputs, attention_mask, cu_seqlens)
        if result is not None:
            return result
    return split_forward(module, lambda *xs: generated(module, *xs), inputs,
                         attention_mask, cu_seqlens)


def _packed(module, gm, inputs: list, attention_mask, cu_seqlens):
    """The packed graph on a packed or (unpadded) padded batch; None where it does not
    apply (no tokens, an output without time, an input without time for several rows)."""
    from .packed import pad, unpad
    d = module.diagram
    in_dims, out_dims = time_dims(module, d.inputs), time_dims(module, d.outputs)
    batch, time = _length(inputs, in_dims)
    if None in out_dims:
        return None
    if cu_seqlens is not None:
        spans = segments(cu_seqlens, batch, time)
        if time == 0:
            return None
        cu = torch.tensor([0] + [b for _, b in spans], dtype=torch.long)
        return gm(*inputs, cu)
    idxs = mask_rows(attention_mask, batch, time)
    lengths = [len(i) for i in idxs]
    if all(n == time for n in lengths):
        return None  # no padding: the module as it is
    if sum(lengths) == 0 or any(x.shape[0] != 1 for x, dim in zip(inputs, in_dims)
                                if dim is None and isinstance(x, Tensor) and x.dim()):
        return None
    flat = torch.cat([i + b * time for b, i in enumerate(idxs)])
    cu = torch.tensor([0, *lengths], dtype=torch.long).cumsum(0)
    outs = _outputs(gm(*unpad(inputs, in_dims, flat), cu))
    return _result([pad(y, dim, flat, batch, time) for y, dim in zip(outs, out_dims)])


# -- step: a state per row -------------------------------------------------------------------
def _batch_dim(spec: tuple, value) -> int | None:
    """The batch dim of a state entry (None: shared by every row)."""
    kind = spec[0]
    if kind in ("ssm", "cumdecay"):
        return 0
    if kind == "scan":
        return 0 if spec[1] else None
    if kind in ("cache", "shift"):
        return spec[1].index(BATCH) if BATCH in spec[1] else None
    return None


def split_state(module, state: dict, n: int) -> list[dict]:
    """One batch-1 state per row: the rows of a ragged state, or a batched state's rows (an
    entry of batch 1 is shared by every row)."""
    if not isinstance(state, dict):
        raise AnatError(f"state must be a dict from init_state or step, got "
                        f"{type(state).__name__}")
    if "rows" in state:
        rows = state["rows"]
        if len(rows) != n:
            raise AnatError(f"the state holds {len(rows)} sequences, the inputs {n}",
                            hint="one state row per batch row (per packed sequence)")
        return list(rows)
    module._step_module()
    specs = module.__dict__["_state_specs"]
    out: list[dict] = [{"pos": state.get("pos", 0)} for _ in range(n)]
    for key, value in state.items():
        if key == "pos":
            continue
        spec = specs.get(key, ("?",))
        if spec[0] == "call" and isinstance(value, dict):
            for row, sub in zip(out, split_state(getattr(module, spec[1]), value, n)):
                row[key] = sub
            continue
        dim = _batch_dim(spec, value) if isinstance(value, Tensor) else None
        if dim is None or value.shape[dim] == 1:
            for row in out:
                row[key] = value
            continue
        if value.shape[dim] != n:
            raise AnatError(f"the state is for a batch of {value.shape[dim]} ({key}), the "
                            f"inputs have {n} sequences",
                            hint=f"start from init_state({n})")
        for b, row in enumerate(out):
            row[key] = value.narrow(dim, b, 1)
    return out


def split_step(module, inputs: list, state: dict, attention_mask=None, cu_seqlens=None):
    """`step` for each row (each packed sequence) alone, continuing its own state row.
    Returns the outputs (padded with zeros, or packed) and the ragged state."""
    d = module.diagram
    in_dims = time_dims(module, d.inputs)
    out_dims = time_dims(module, d.outputs)
    batch, time = _length(inputs, in_dims)
    if cu_seqlens is not None:
        if None in out_dims:
            raise AnatError(f"{d.name} has an output without a time axis: packed sequences "
                            f"would each give one", hint="use attention_mask instead")
        spans = segments(cu_seqlens, batch, time)
        rows = split_state(module, state, len(spans))
        pieces = []
        for i, s in enumerate(spans):
            if s[1] > s[0]:
                y, rows[i] = module.step(*_take(inputs, in_dims, None, span=s), rows[i])
                pieces.append(_outputs(y))
        if not pieces:
            raise AnatError("cu_seqlens holds no tokens", hint=CU_HINT)
        outs = [torch.cat([p[j] for p in pieces], out_dims[j]) for j in range(len(out_dims))]
        return _result(outs), {"rows": rows}
    if attention_mask is None:
        idxs = [torch.arange(time, device=_device(inputs))] * batch
    else:
        idxs = mask_rows(attention_mask, batch, time)
    rows = split_state(module, state, batch)
    results = []
    for b, idx in enumerate(idxs):
        if len(idx):
            y, rows[b] = module.step(*_take(inputs, in_dims, b, idx=idx), rows[b])
            results.append(_outputs(y))
        else:
            results.append(None)
    if all(r is None for r in results):
        raise AnatError("attention_mask masks every token of the chunk", hint=MASK_HINT)
    return _result(padded_rows(results, idxs, time, out_dims)), {"rows": rows}


def _device(inputs):
    return next(x.device for x in inputs if isinstance(x, Tensor))
