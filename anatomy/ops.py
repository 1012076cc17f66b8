"""The built-in boxes of the language: their arguments, options and component kind.

This table is the single place that says which names are boxes; the parser reads it to
build boxes, the shape checker to type them, and the renderer for the component kinds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Component kinds (one colour each when drawn).
KINDS = ("input", "parameter", "projection", "similarity", "mask", "normaliser", "mixing",
         "gate", "norm", "activation", "position", "structure", "sharing", "arithmetic",
         "composite", "slot")


@dataclass(frozen=True)
class OpSpec:
    name: str
    kind: str
    doc: str
    tensors: int = 1            # positional wire arguments; -1: one or more
    axes: tuple[str, ...] = ()  # positional axis arguments after the tensors; "*" suffix: 1+
    options: dict[str, Any] = field(default_factory=dict)  # keyword options with defaults
    tensor_options: tuple[str, ...] = ()  # keyword options that take a wire (e.g. mask=)


def _unary(name: str, kind: str, doc: str) -> OpSpec:
    return OpSpec(name, kind, doc)


OPS: dict[str, OpSpec] = {op.name: op for op in [
    # elementwise nonlinearities
    _unary("exp", "activation", "e^x, elementwise"),
    _unary("log", "activation", "natural logarithm, elementwise"),
    _unary("sqrt", "activation", "square root, elementwise"),
    _unary("abs", "activation", "absolute value, elementwise"),
    _unary("tanh", "activation", "hyperbolic tangent, elementwise"),
    _unary("relu", "activation", "max(x, 0), elementwise"),
    _unary("elu", "activation", "ELU (alpha = 1), elementwise"),
    _unary("gelu", "activation", "GeLU (exact, erf form), elementwise"),
    _unary("softplus", "activation", "log(1 + e^x), elementwise"),
    _unary("sigmoid", "gate", "1 / (1 + e^-x), elementwise"),
    _unary("silu", "gate", "x * sigmoid(x) (swish), elementwise"),
    # normalisers over an axis
    OpSpec("softmax", "normaliser", "softmax over an axis; mask= (0/1) sets masked scores to -inf",
           axes=("axis",), tensor_options=("mask",)),
    OpSpec("normalise", "normaliser", "x / sum of x over an axis (sum-normalised)",
           axes=("axis",), options={"eps": 0.0}),
    OpSpec("l2normalise", "normaliser", "x / ||x||_2 over an axis", axes=("axis",),
           options={"eps": 1e-6}),
    # norms (learned affine parameters named after the target wire)
    OpSpec("layernorm", "norm", "layer norm over the given axes", axes=("axes*",),
           options={"eps": 1e-5, "affine": True}),
    OpSpec("rmsnorm", "norm", "RMS norm over the given axes", axes=("axes*",),
           options={"eps": 1e-5, "affine": True}),
    OpSpec("groupnorm", "norm",
           "norm over `axis` separately for each index of `group`, affine over both",
           axes=("axis", "group"), options={"eps": 1e-5, "affine": True}),
    # masks and decays: [t, s] matrices
    OpSpec("causal", "mask", "1 where s <= t, else 0", tensors=0, axes=("query", "key")),
    OpSpec("window", "mask", "1 where 0 <= t - s < size (sliding window), else 0", tensors=0,
           axes=("query", "key"), options={"size": 0}),
    OpSpec("full", "mask", "all ones: no mask (bidirectional)", tensors=0,
           axes=("query", "key")),
    OpSpec("decay", "mask",
           "exp(sum_{i=s+1..t} log_a_i) for s <= t else 0, from log-decays (log-space "
           "segment sum); a log-decay without the query axis is constant: exp((t-s) log_a)",
           axes=("query", "key")),
    # sequence structure
    OpSpec("shift", "structure", "move one step later along an axis (zero at the start)",
           axes=("axis",), options={"by": 1}),
    OpSpec("flip", "structure", "reverse along an axis", axes=("axis",)),
    OpSpec("rope", "position", "rotary position encoding of pairs of `feature` by position",
           axes=("position", "feature"), options={"base": 10000.0}),
    OpSpec("xpos", "position",
           "rotary encoding with xPos scaling (downscale=true for keys)",
           axes=("position", "feature"),
           options={"base": 10000.0, "scale_base": 512.0, "downscale": False}),
    OpSpec("concat", "structure", "concatenate along one axis (taken from the target)",
           tensors=-1),
    OpSpec("split", "structure", "split one axis into the targets' axes", tensors=1),
    # forms of masked linear attention that the rewrite engine derives (anatomy.rewrite)
    OpSpec("scan", "mixing",
           "the linear recurrence S_t = exp(log_a_t) S_{t-1} + u_t along an axis (S_-1 = 0): "
           "sum_{s<=t} exp(sum_{i=s+1..t} log_a_i) u_s, the recurrent form of a decay mask",
           tensors=2, axes=("axis",)),
    OpSpec("ssd", "mixing",
           "y_t = sum_{s<=t} exp(sum_{i=s+1..t} log_a_i) (q_t . k_s) v_s evaluated chunk by "
           "chunk (Mamba-2's SSD algorithm); q, k and v are all given along the time axis; the "
           "axes of q and k that the target lacks are summed (the state); a log_a with state "
           "axes decays each key channel on its own (gated linear attention's kernel)",
           tensors=4, axes=("axis",), options={"chunk": 64}),
    OpSpec("delta_rule", "mixing",
           "the delta rule along an axis: o_t = q_t S_t, S_t = (I - beta_t k_t k_t^T) "
           "diag(exp(log_a_t)) S_{t-1} + beta_t k_t v_t^T, S_-1 = 0 (DeltaNet with log_a = 0, "
           "Gated DeltaNet with log_a per head, KDA with log_a per key channel); the axes of "
           "q and k that the target lacks are the state's key axes",
           tensors=5, axes=("axis",), options={"chunk": 64}),
    OpSpec("reshape", "structure",
           "merge the input's axes the target lacks, row-major, into the target's axes the "
           "input lacks (e.g. [t, d] -> [t, h, p])", tensors=1),
    OpSpec("share", "sharing",
           "KV sharing: groups axis g broadcast to heads axis h (head i uses group i // (H/G))",
           axes=("groups", "heads")),
    OpSpec("index", "structure", "0, 1, ..., n-1 along an axis", tensors=0, axes=("axis",)),
    OpSpec("size", "structure", "the size of an axis, as a scalar", tensors=0, axes=("axis",)),
    # projections
    OpSpec("linear", "projection",
           "a learned linear map: a parameter box and a contraction (sugar)",
           options={"in_axes": None, "out_axes": None, "bias": False, "name": None,
                    "init": None}),
]}

# Boxes the parser makes from operators and statements rather than from calls.
STRUCTURAL = {
    "param": "parameter",     # a learned tensor
    "const": "arithmetic",    # a number
    "contract": "mixing",     # Einstein product: multiply factors, sum the axes not kept
    "add": "arithmetic", "sub": "arithmetic", "div": "arithmetic", "pow": "arithmetic",
    "neg": "arithmetic",
    "call": "composite",      # another anatomy used as a box
    "slot": "slot",           # an open component, filled by an anatomy that `fills` it
}

# Keyword spellings accepted in the language for the options above.
OPTION_SPELLING = {"in": "in_axes", "out": "out_axes"}

# Parameter initialisers: name -> number of numeric arguments allowed.
INITS = {
    "zeros": (0,), "ones": (0,), "constant": (1,),
    "normal": (0, 1, 2),             # std, or mean and std (default std 0.02)
    "uniform": (2,),                 # lo, hi
    "log_uniform": (2,),             # log of U(lo, hi): Mamba-2's A_log
    "inv_softplus_log_uniform": (2,),  # softplus^-1 of logU(lo, hi): Mamba-2's dt_bias
    "fan_in": (0,),                  # U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = first axes
}


def ssd_state(q: tuple[str, ...], k: tuple[str, ...], out: tuple[str, ...]) -> tuple[str, ...]:
    """The state (summed) axes of `out = ssd(q, k, v, log_a, t)`: those of q and k that the
    target lacks, as for any Einstein product."""
    return tuple(a for a in q if a in k and a not in out)


def keeps_axes(op: str) -> bool:
    """Boxes whose output has their first input's axes; nested in a statement, they pass
    the statement's target axes down to their argument (so `rope(linear(x), t, r)` works)."""
    return op in OPS and (OPS[op].kind in ("activation", "gate", "position", "norm")
                          or op in ("shift", "flip"))


def kind_of(op: str) -> str:
    if op in OPS:
        return OPS[op].kind
    return STRUCTURAL.get(op, "arithmetic")
