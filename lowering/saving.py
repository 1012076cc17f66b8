"""Saving and loading compiled anatomies: pickle, `torch.save(module)`, `copy.deepcopy`.

A GraphModule pickles as its generated code and re-traces that code when loaded, which a
compiled anatomy cannot survive (its input check refuses the tracer's proxies), and the
re-traced module would lose what it was compiled from. An `AnatModule` pickles instead as
its recipe, the diagram, its checked shapes and the form, plus its own parameters, buffers
and submodules (composite boxes, pickled the same way, so a grown model keeps its grown
parts). Loading compiles the recipe again on the meta device (no memory, no random init)
and puts the saved tensors in place, with their dtype, device and requires_grad.
Hooks and attributes set by hand on the module are not kept (state_dict is unchanged).
"""

from __future__ import annotations

import copy

import torch


def recipe(module) -> tuple:
    """What `restore` rebuilds `module` from (the arguments of its pickle)."""
    non_persistent = module._non_persistent_buffers_set
    return (module.diagram, module.shapes, module.form,
            dict(module._parameters),
            {k: (v, k not in non_persistent) for k, v in module._buffers.items()},
            dict(module._modules), module.training)


def restore(diagram, shapes, form, parameters, buffers, children, training):
    """Compile the recipe again and put the saved tensors and submodules in place."""
    from .module import compile_diagram
    with torch.device("meta"):
        module = compile_diagram(diagram, shapes, form)
    for name, child in children.items():
        module.add_module(name, child)
    for name, param in parameters.items():
        module.register_parameter(name, param)
    for name, (buffer, persistent) in buffers.items():
        module.register_buffer(name, buffer, persistent=persistent)
    module.training = training
    return module


def deep_copy(module, memo: dict):
    """A copy with its own parameters, buffers and submodules; the diagram and shapes (never
    changed once compiled) are shared."""
    diagram, shapes, form, *state = recipe(module)
    memo[id(diagram)], memo[id(shapes)] = diagram, shapes
    params, buffers, children, training = copy.deepcopy(state, memo)
    return restore(diagram, shapes, form, params, buffers, children, training)
