"""Variable length (lowering/varlen.py): for every zoo entry and every form its module offers,
a padded batch (`attention_mask`) equals running each row's real tokens alone (zeros at the
padding), packed sequences (`cu_seqlens`) equal the sequences run alone and concatenated, and
`step` with a mask or packed sequences continues each row alone. The reference is always the
same module on one unpadded sequence at a time. Tolerance: float64, max relative error
(max |got - want| / max |want|) <= 1e-9.
"""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch

import anatomy
from anatomy.errors import AnatError
from tests.references import random_inputs
from tests.test_lowering import SMALL

TOL = 1e-9
B, T = 3, 11
# row 0 left-padded by 3, row 1 right-padded by 4, row 2 with a hole: its real tokens in order
MASK = torch.ones(B, T, dtype=torch.long)
MASK[0, :3] = 0
MASK[1, 7:] = 0
MASK[2, 4:6] = 0
LENGTHS = [4, 0, 7, 1]  # packed sequences (an empty one too)


def zoo_entries() -> list[tuple[str, str]]:
    return [(file, name) for file, program in anatomy.zoo().items() for name in program.own]


ENTRIES = zoo_entries()
IDS = [name for _, name in ENTRIES]


def build(file: str, name: str, form: str):
    dims = SMALL.get(name, {})
    diagram = anatomy.load(str(anatomy.zoo_dir() / f"{file}.anat"), **dims)[name]
    module = anatomy.compile(diagram, form=form, **dims).double()
    return module, diagram


def max_rel(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got - want).abs().max() / want.abs().max().clamp_min(1e-300)).item()


def inputs_for(diagram, batch: int, time: int, seed: int = 1) -> tuple[list, list]:
    """Random inputs and, per input, its time dim (None: no time axis)."""
    xs = random_inputs(diagram, B=batch, T=time, seed=seed)
    t = diagram.time_axis
    args = [xs[p.name] for p in diagram.inputs]
    return args, [1 + p.axes.index(t) if t in p.axes else None for p in diagram.inputs]


def take(args, dims, row=None, idx=None, span=None):
    out = []
    for x, d in zip(args, dims):
        x = x if row is None else x[row:row + 1]
        if d is not None:
            x = x.index_select(d, idx) if idx is not None else x[(slice(None),) * d +
                                                                   (slice(*span),)]
        out.append(x)
    return out


def has_step(module) -> bool:
    try:
        module.init_state(1)
    except AnatError as e:
        assert "no recurrent form" in str(e)
        return False
    return True


@pytest.mark.parametrize("form", ["parallel", "chunked", "auto"])
@pytest.mark.parametrize(("file", "name"), ENTRIES, ids=IDS)
@torch.no_grad()
def test_padding_and_packing_equal_each_sequence_alone(file, name, form):
    module, diagram = build(file, name, form)
    args, dims = inputs_for(diagram, B, T)
    got = module(*args, attention_mask=MASK)
    assert got.shape == module(*args).shape
    for b in range(B):
        idx = MASK[b].nonzero().flatten()
        want = module(*take(args, dims, b, idx=idx))
        assert max_rel(got[b:b + 1].index_select(1, idx), want) <= TOL, b
        assert not got[b][MASK[b] == 0].any()  # padded positions are zero
    assert torch.equal(module(*args, attention_mask=torch.ones(B, T, dtype=torch.bool)),
                       module(*args))

    packed, dims = inputs_for(diagram, 1, sum(LENGTHS), seed=2)
    cu = torch.tensor([0, *torch.tensor(LENGTHS).cumsum(0).tolist()], dtype=torch.int32)
    got = module(*packed, cu_seqlens=cu)
    want = torch.cat([module(*take(packed, dims, span=(a, b)))
                      for a, b in zip(cu.tolist(), cu[1:].tolist()) if b > a], 1)
    assert max_rel(got, want) <= TOL


@pytest.mark.parametrize(("file", "name"), ENTRIES, ids=IDS)
@torch.no_grad()
def test_step_with_left_padded_prefill_and_packed_sequences(file, name):
    module, diagram = build(file, name, "auto")
    args, dims = inputs_for(diagram, B, T)
    if not has_step(module):
        with pytest.raises(AnatError, match="no recurrent form"):
            module.step(*args, {"pos": 0}, attention_mask=MASK)
        return
    # left-padded prefill of 7, then decoding the last 4 tokens one at a time, unmasked
    left = torch.ones(B, T, dtype=torch.long)
    left[0, :3] = 0
    left[1, :1] = 0
    state = module.init_state(B)
    y, state = module.step(*take(args, dims, span=(0, 7)), state, attention_mask=left[:, :7])
    outs = [y]
    for t in range(7, T):
        y, state = module.step(*take(args, dims, span=(t, t + 1)), state)
        outs.append(y)
    got = torch.cat(outs, 1)
    for b in range(B):
        idx = left[b].nonzero().flatten()
        want = module(*take(args, dims, b, idx=idx))
        assert max_rel(got[b:b + 1].index_select(1, idx), want) <= TOL, b
        assert not got[b][left[b] == 0].any()
    assert [row["pos"] for row in state["rows"]] == left.sum(1).tolist()

    # packed: three sequences continue their own rows of one state
    lengths = [4, 6, 2]
    packed, dims = inputs_for(diagram, 1, sum(lengths) + 3, seed=3)
    cu = [0, 4, 10, 12]
    state = module.init_state(3)
    y1, state = module.step(*take(packed, dims, span=(0, 12)), state, cu_seqlens=cu)
    y2, state = module.step(*take(packed, dims, span=(12, 15)), state,
                            cu_seqlens=torch.tensor([0, 1, 2, 3]))
    for i, (a, b) in enumerate(pairwise(cu)):
        seq = [torch.cat([x[(slice(None),) * d + (slice(a, b),)],
                          x[(slice(None),) * d + (slice(12 + i, 13 + i),)]], d)
               if d is not None else x for x, d in zip(packed, dims)]
        want = module(*seq)
        assert max_rel(y1[:, a:b], want[:, :b - a]) <= TOL, i
        assert max_rel(y2[:, i:i + 1], want[:, b - a:]) <= TOL, i


def test_a_masked_batch_gives_gradients_only_to_real_tokens():
    module, _ = build("ssd", "ssd", "auto")
    x = torch.randn(B, T, 32, dtype=torch.float64, requires_grad=True)
    module(x, attention_mask=MASK).sum().backward()
    assert not x.grad[MASK == 0].any() and x.grad[MASK == 1].abs().sum(-1).all()


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"attention_mask": torch.ones(B, T + 1)}, "attention_mask has shape"),
    ({"attention_mask": torch.full((B, T), 2)}, "0 and 1"),
    ({"attention_mask": torch.ones(B, T)}, "0 and 1"),
    ({"attention_mask": [[1] * T] * B}, "must be a tensor"),
    ({"cu_seqlens": torch.tensor([0, T])}, "batch of 1"),
    ({"attention_mask": MASK, "cu_seqlens": torch.tensor([0, T])}, "not both"),
])
def test_bad_masks_and_offsets_are_refused(kwargs, match):
    module, _ = build("ssd", "ssd", "auto")
    with pytest.raises(AnatError, match=match):
        module(torch.randn(B, T, 32, dtype=torch.float64), **kwargs)


@pytest.mark.parametrize(("cu", "match"), [
    ([1, 5], "from 0"), ([0, 4], "from 0"), ([0, 6, 3, 5], "must not decrease"),
    (torch.tensor([0.0, 5.0]), "integer"), ("0,5", "integer"),
])
def test_bad_cu_seqlens_are_refused(cu, match):
    module, _ = build("ssd", "ssd", "auto")
    with pytest.raises(AnatError, match=match):
        module(torch.randn(1, 5, 32, dtype=torch.float64), cu_seqlens=cu)


def test_a_ragged_state_must_match_the_batch():
    module, _ = build("ssd", "ssd", "auto")
    x = torch.randn(B, T, 32, dtype=torch.float64)
    _, state = module.step(x, module.init_state(B), attention_mask=MASK)
    with pytest.raises(AnatError, match="holds 3 sequences, the inputs 2"):
        module.step(x[:2], state)
    with pytest.raises(AnatError, match="batch of 3"):
        module.step(x[:1, :4], module.init_state(B), cu_seqlens=[0, 2, 4])


PACKED = ["ssd", "gated_linear_attention", "deltanet", "gated_deltanet", "kda", "rwkv6",
          "retnet", "mamba1", "hgrn2", "linear_attention", "persistent_memory", "ss"]


@pytest.mark.parametrize("form", ["chunked", "auto"])
@pytest.mark.parametrize("name", PACKED)
def test_the_linear_time_families_run_packed_through_one_graph(name, form):
    from anatomy.lowering.packed import packed_graph_module
    (file,) = [f for f, n in ENTRIES if n == name]
    module, _ = build(file, name, form)
    gm = packed_graph_module(module)
    assert gm is not None
    assert "_packed(" in gm.code or "packed_scan" in gm.code or "packed_call" in gm.code


@pytest.mark.parametrize("name", ["mha", "gqa", "mqa", "mla", "softmax_core",
                                  "softmax_bidirectional_core"])
def test_plain_softmax_runs_packed_with_a_block_diagonal_mask(name):
    from anatomy.lowering.packed import packed_graph_module
    (file,) = [f for f, n in ENTRIES if n == name]
    module, _ = build(file, name, "auto")
    gm = packed_graph_module(module)
    assert gm is not None and "packed_attention(" in gm.code


@pytest.mark.parametrize("name", ["alibi", "forgetting_transformer", "sliding_window", "hydra"])
def test_biased_windowed_and_bidirectional_mixers_run_one_sequence_at_a_time(name):
    from anatomy.lowering.packed import lowered, packed_graph_module, why_not_packed
    (file,) = [f for f, n in ENTRIES if n == name]
    module, _ = build(file, name, "auto")
    assert packed_graph_module(module) is None
    assert why_not_packed(*lowered(module))


@pytest.mark.parametrize("name", ["ssd", "gated_deltanet", "rwkv6", "mha"])
@torch.no_grad()
def test_float32_packed_sequences_across_chunk_boundaries(name):
    # the C++ chunked kernels (float32): sequences of 70, 1 and 130 tokens cross the 64-token
    # chunks; tolerance: relative RMSE <= 1e-5 against each sequence alone
    (file,) = [f for f, n in ENTRIES if n == name]
    module, diagram = build(file, name, "auto")
    module.float()
    lengths = [70, 1, 130]
    packed, dims = inputs_for(diagram, 1, sum(lengths), seed=4)
    packed = [x.float() for x in packed]
    cu = torch.tensor([0, 70, 71, 201], dtype=torch.int32)
    got = module(*packed, cu_seqlens=cu)
    want = torch.cat([module(*take(packed, dims, span=(a, b))) for a, b in pairwise(cu.tolist())],
                     1)
    assert rel_rmse(got, want) <= 1e-5
    mask = torch.zeros(2, 130, dtype=torch.bool)
    mask[0, 60:] = True
    mask[1, :90] = True
    x = torch.randn(2, 130, packed[0].shape[-1])
    got = module(x, attention_mask=mask)
    assert rel_rmse(got[:1, 60:], module(x[:1, 60:])) <= 1e-5
    assert rel_rmse(got[1:, :90], module(x[1:, :90])) <= 1e-5
    assert not got[0, :60].any() and not got[1, 90:].any()


def rel_rmse(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.double(), want.double()
    return ((got - want).pow(2).mean().sqrt() / want.pow(2).mean().sqrt()).item()


def test_a_fixed_sequence_length_is_refused():
    module = anatomy.compile("anatomy m(x[t, d]) -> y[t, e]\n  dims t = 6, d = 4, e = 4\n"
                             "  y[t, e] = linear(x)\n")
    with pytest.raises(AnatError, match="exactly 6 tokens"):
        module(torch.randn(2, 6, 4), attention_mask=torch.ones(2, 6))


@pytest.mark.parametrize("name", ["ssd", "mha", "rwkv6", "context_memory",
                                  "forgetting_transformer", "sliding_window"])
@torch.no_grad()
def test_a_batched_state_splits_into_rows_for_a_masked_step(name):
    # SSM states, KV caches, shifts, scans and cumulative decays: four tokens for the whole
    # batch, then a masked chunk; each row equals its own sequence run alone
    (file,) = [f for f, n in ENTRIES if n == name]
    module, diagram = build(file, name, "auto")
    (x,), _ = inputs_for(diagram, B, T)
    y0, state = module.step(x[:, :4], module.init_state(B))
    chunk = torch.ones(B, T - 4, dtype=torch.bool)
    chunk[1, -3:] = False
    chunk[2, 1:3] = False
    y1, state = module.step(x[:, 4:], state, attention_mask=chunk)
    for b in range(B):
        seq = torch.cat([x[b:b + 1, :4], x[b:b + 1, 4:][:, chunk[b]]], 1)
        want = module(seq)
        assert max_rel(y0[b:b + 1], want[:, :4]) <= TOL, b
        assert max_rel(y1[b:b + 1, chunk[b]], want[:, 4:]) <= TOL, b
        assert state["rows"][b]["pos"] == 4 + int(chunk[b].sum())


def test_a_shift_along_features_keeps_a_diagram_off_the_packed_path():
    from anatomy.lowering.packed import packed_graph_module
    module = anatomy.compile("anatomy m(x[t, d]) -> y[t, d]\n  dims d = 4\n"
                             "  y[t, d] = shift(x, d) + shift(x, t)\n").double()
    assert packed_graph_module(module) is None
    x = torch.randn(1, 9, 4, dtype=torch.float64)
    want = torch.cat([module(x[:, :4]), module(x[:, 4:])], 1)
    assert max_rel(module(x, cu_seqlens=[0, 4, 9]), want) <= TOL
