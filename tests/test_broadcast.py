"""Parameters broadcast over batch and time (lowering/broadcast.py): traced code expands them
and sums their gradients with ``anatomy::sum_to_size``, so inductor's CPU code has no
reduction over B·T to guard on (it guarded B·T·k <= 4096 and recompiled at a longer T).

Checked: the op against torch's own ``sum_to_size``; compiled gradients against eager ones
for entries that broadcast parameters through each path (a binary op, a norm's scale, a
two- and a three-operand product, a scan's decay); and, with inductor itself, no size guard
and no recompile for ssd across a T that crosses the old threshold.
"""

from __future__ import annotations

import pytest
import torch
from anatomy.lowering.broadcast import expand_operands, sum_to_size

from tests.inductor_guards import size_guards
from tests.test_citizen import compiled, compiled_inputs
from tests.test_lowering import rel_rmse


def test_sum_to_size_op_sums_over_the_broadcast_axes():
    g = torch.randn(3, 5, 4, 2, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(sum_to_size, (g, [1, 5, 1, 2]))
    want = g.detach().sum(dim=(0, 2), keepdim=True)
    assert torch.equal(sum_to_size(g.detach(), [1, 5, 1, 2]), want)


def test_eager_products_keep_their_operands():
    """Outside a trace, expand_operands changes nothing (eager code broadcasts as usual)."""
    p, x = torch.randn(4, requires_grad=True), torch.randn(2, 3, 4)
    spec, operands = expand_operands("c,abc->abc", [p, x], ((0, "abc"),))
    assert spec == "c,abc->abc" and operands[0] is p


def _grads(module, inputs, call=None):
    y = (module if call is None else call)(*inputs)
    y.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    module.zero_grad()
    return y.detach(), grads


# ssd: a bias added to a projection, a norm's scale, two-operand products with a parameter;
# context_memory: a three-operand product with a parameter, a scan with a learned decay
@pytest.mark.parametrize("name", ["ssd", "context_memory", "retnet"])
def test_compiled_gradients_of_broadcast_parameters_equal_eager_ones(name):
    module, _ = compiled(name, "auto")
    torch._dynamo.reset()
    fn = torch.compile(module, backend="aot_eager", dynamic=True, fullgraph=True)
    for T in (9, 40):
        inputs = compiled_inputs(module.diagram, T)
        want_y, want = _grads(module, inputs)
        got_y, got = _grads(module, inputs, call=fn)
        assert rel_rmse(got_y, want_y) <= 1e-5
        assert got.keys() == want.keys() and want
        for n in want:
            assert rel_rmse(got[n], want[n]) <= 1e-5, n


def test_inductor_compiles_ssd_training_once_across_the_old_size_threshold():
    """B = 2: T = 17 and 300 sit on either side of 16·B·T = 4096, where the gradient of ssd's
    D (summed over batch, time and 16 channels) used to recompile."""
    from torch._dynamo.utils import counters
    module, _ = compiled("ssd", "auto")
    torch._dynamo.reset()
    counters.clear()
    with size_guards() as guards:
        fn = torch.compile(module, dynamic=True, fullgraph=True)
        for T in (17, 300):
            _grads(module, compiled_inputs(module.diagram, T), call=fn)
    assert guards == set()
    assert counters["stats"]["unique_graphs"] == 1
