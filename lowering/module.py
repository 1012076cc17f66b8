"""Compiled anatomies: `anatomy.compile(...)` returns an `AnatModule`, a torch.fx
GraphModule whose parameters are named after the diagram's wires.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, fx, nn

from anatomy.errors import AnatError
from anatomy.ir import Diagram, Program
from anatomy.shapes import Shapes, check

FORMS = ("auto", "parallel", "chunked")


class AnatModule(fx.GraphModule):
    """A compiled diagram. `forward` takes the diagram's inputs by name and order, each laid
    out [batch, time, ...], and optionally `attention_mask` [batch, time] (0: padding) or
    packed sequences `cu_seqlens` (lowering/varlen.py). `diagram`, `shapes` and `form`
    record what it was compiled from.

    `step(*inputs, state) -> (outputs, state)` is the recurrent form over a chunk of new
    tokens (any length: prefill or decode); `init_state(batch)` is the state before any.
    """

    diagram: Diagram
    shapes: Shapes
    form: str

    def __reduce__(self):
        """Pickled as what it was compiled from plus its tensors (lowering/saving.py)."""
        from .saving import recipe, restore
        return restore, recipe(self)

    def __deepcopy__(self, memo):
        from .saving import deep_copy
        return deep_copy(self, memo)

    def __repr__(self) -> str:
        """Name, form, ports, and each parameter's shape and use (lowering/describe.py)."""
        from .describe import describe
        return describe(self)

    __str__ = __repr__

    def recompile(self):
        """Generate the code (torch.fx), then let `forward` take `attention_mask` or
        `cu_seqlens` (lowering/varlen.py) beside the diagram's inputs."""
        code = super().recompile()
        from .varlen import with_varlen
        cls = type(self)
        cls.forward = with_varlen(cls.forward)
        return code

    def _recompile_submodules(self) -> list:
        """Nothing: each composite's module was compiled when it was built. (torch.fx
        recompiles every descendant whenever a module recompiles, which made compiling
        nested composites quadratic in their depth.)"""
        return []

    def _step_module(self):
        gm = self.__dict__.get("_step_gm")
        if gm is None:
            from anatomy.causality import check_causal

            from .forms import structured_forms
            from .recurrent import StepBuilder
            check_causal(self.diagram, self.shapes)
            diagram, shapes = structured_forms(self.diagram, self.shapes,
                                               "auto" if self.form == "auto" else "chunked")
            builder = StepBuilder(diagram, shapes, self, form=self.form)
            graph = builder.build()
            gm = fx.GraphModule(self, graph, class_name=f"{self.diagram.name}_step")
            gm.graph.eliminate_dead_code()
            gm.recompile()
            self.__dict__["_step_gm"] = gm
            self.__dict__["_state_specs"] = builder.state_specs
        return gm

    @property
    def step_code(self) -> str:
        """The generated code of the step form."""
        return self._step_module().code

    def step(self, *inputs, state: dict | None = None, attention_mask=None, cu_seqlens=None):
        """Run the recurrent form over a chunk [batch, chunk, ...] continuing from `state`.
        With `attention_mask` [batch, chunk] (0: padding) or packed sequences `cu_seqlens`,
        each row continues its own state row (lowering/varlen.py)."""
        if state is None:
            *inputs, state = inputs
        if attention_mask is not None or cu_seqlens is not None or "rows" in state:
            from .varlen import split_step
            return split_step(self, list(inputs), state, attention_mask, cu_seqlens)
        return self._step_module()(*inputs, state)

    def init_state(self, batch: int, dtype: torch.dtype | None = None,
                   device: torch.device | str | None = None) -> dict:
        """The state before any token: position 0, empty caches, zero SSM states. Entries
        whose sizes depend on the inputs (axes without dims) are None until the first step."""
        self._step_module()
        params = list(self.parameters())
        dtype = dtype or (params[0].dtype if params else torch.get_default_dtype())
        device = device or (params[0].device if params else "cpu")
        state: dict = {"pos": 0}
        for key, spec in self.__dict__["_state_specs"].items():
            kind = spec[0]
            if kind == "call":
                state[key] = getattr(self, spec[1]).init_state(batch, dtype, device)
                continue
            if kind in ("scan", "cumdecay"):  # the first step starts it
                state[key] = None
                continue
            if kind == "ssm":
                shape = None if None in spec[1] else (batch, *spec[1])
            else:
                layout, dim = spec[1], spec[2]
                length = 0 if kind == "cache" else spec[3]
                shape = [batch if a == "$batch" else length if i == dim
                         else self.shapes.size(a) for i, a in enumerate(layout)]
                shape = None if None in shape else shape
            state[key] = None if shape is None else \
                torch.zeros(shape, dtype=dtype, device=device)
        return state


def input_spec(d: Diagram, shapes: Shapes) -> tuple:
    """Static description of the inputs for `check_inputs`: (name, axes, sizes, classes)."""
    return tuple((p.name, p.axes, tuple(shapes.size(a) for a in p.axes),
                  tuple(shapes.sizes.find(a) for a in p.axes)) for p in d.inputs)


@torch.fx.node.has_side_effect
def check_inputs(spec: tuple, *tensors) -> None:
    """Refuse inputs of the wrong shape with an error naming the axis and expected size."""
    seen: dict[str, tuple[int, str]] = {}
    batch = None
    for (name, axes, sizes, classes), x in zip(spec, tensors):
        want = "[batch, " + ", ".join(axes) + "]" if axes else "[batch]"
        if not isinstance(x, Tensor):
            raise AnatError(f"input `{name}` must be a tensor laid out {want}, got "
                            f"{type(x).__name__}")
        if x.dim() != len(axes) + 1:
            raise AnatError(f"input `{name}` must have {len(axes) + 1} dims {want}, got shape "
                            f"{tuple(x.shape)}", hint="tensors are laid out [batch, time, ...]")
        if batch is None:
            batch = x.shape[0]
        elif x.shape[0] != batch:
            raise AnatError(f"input `{name}` has batch size {x.shape[0]}, other inputs {batch}")
        for i, (axis, size, cls) in enumerate(zip(axes, sizes, classes)):
            got = x.shape[i + 1]
            if size is not None and got != size:
                raise AnatError(f"input `{name}`: axis {axis} must be {size}, got {got} "
                                f"(shape {tuple(x.shape)}, expected {want})",
                                hint=f"compile with {axis}={got} to change the dim")
            if size is None:
                if cls in seen and seen[cls][0] != got:
                    raise AnatError(f"input `{name}`: axis {axis} is {got} but "
                                    f"{seen[cls][1]} is {seen[cls][0]}; they are one axis")
                seen.setdefault(cls, (got, f"axis {axis} of `{name}`"))


def _refuse_decays_on_values(d: Diagram) -> None:
    """The chunked forms have no kernel for a decay along a value axis (one per key channel
    and value, y[t, h, p] = Σ_{s, n} L[t, s, h, n, p] q k v): refuse it rather than
    materialise the [T, T, H, N, P] decay; its scan form (or form="parallel") runs."""
    from anatomy.rewrite.rules.masks import decay_value_axes
    for box in d.boxes:
        axes = decay_value_axes(d, box)
        if axes:
            names = ", ".join(axes)
            raise AnatError(
                f"the decay in `{box.outputs[0]}` also runs along the value axis {names}: the "
                f"chunked form decays each key channel (gated linear attention), not each "
                f"(key channel, value) pair", box.loc,
                hint=f"write the recurrence with scan (st[t, ..., {names}] = scan(k * v, "
                     f"log_a, t), then q * st), make {names} a heads axis (Mamba-1: one value "
                     f"per channel), or compile with form=\"parallel\"")


def compile_diagram(d: Diagram, shapes: Shapes, form: str = "auto") -> AnatModule:
    """Lower one checked diagram (at the dims `shapes` was checked with)."""
    from .forms import structured_forms
    from .graph import GraphBuilder
    if form not in FORMS:
        raise AnatError(f"unknown execution form `{form}`", hint=f"one of {', '.join(FORMS)}")
    owner = nn.Module()
    lowered, lowered_shapes = structured_forms(d, shapes, form)
    if form != "parallel":
        _refuse_decays_on_values(lowered)
    builder = GraphBuilder(lowered, lowered_shapes, owner, form=form)
    graph = builder.build()
    graph.owning_module = owner  # its submodules answer the purity check
    graph.eliminate_dead_code()  # e.g. masks that a structured form did not need
    module = AnatModule(owner, graph, class_name=d.name)  # generates the code once
    _keep_declared(module, owner)
    module.diagram, module.shapes, module.form = d, shapes, form
    return module


def _keep_declared(module: nn.Module, owner: nn.Module) -> None:
    """Every parameter, buffer and composite the diagram declares stays in the module, used
    by this form's graph or not: fx copies only what the graph reads, but the step form reads
    the diagram's own parameters, and a state_dict must load into every form alike."""
    for name, child in owner.named_children():
        if name not in module._modules:
            module.add_module(name, child)
    for name, p in owner.named_parameters(recurse=False):
        if name not in module._parameters:
            module.register_parameter(name, p)
    for name, b in owner.named_buffers(recurse=False):
        if name not in module._buffers:
            module.register_buffer(name, b)


MAX_MODULES = 4096
MAX_MODULES_ENV = "ANATOMY_MAX_MODULES"


def guard_modules(d: Diagram, shapes: Shapes, max_modules: int | None = None) -> None:
    """Refuse (AnatError) a diagram whose compiled module would hold more than
    `max_modules` modules (default `MAX_MODULES`, or the `ANATOMY_MAX_MODULES` variable).

    Every composite call is a submodule with its own parameters (two calls of one anatomy
    are two layers, as in Hydra's `yf` and `yb`), so a chain of anatomies that each call the
    next twice makes 2**depth modules; the count is computed in time linear in the program
    (`Shapes.expanded_calls`), before anything is built."""
    import os
    if max_modules is None:
        raw = os.environ.get(MAX_MODULES_ENV, "")
        try:
            max_modules = int(raw) if raw.strip() else MAX_MODULES
        except ValueError:
            raise AnatError(f"{MAX_MODULES_ENV}={raw!r} is not a whole number",
                            hint=f"e.g. {MAX_MODULES_ENV}=20000") from None
    modules = shapes.expanded_calls() + 1
    if modules > max_modules:
        raise AnatError(f"compiling {d.name} would build {modules:,} modules (one per "
                        f"composite call, each with its own parameters), more than the "
                        f"limit of {max_modules:,}", d.loc,
                        hint=f"call fewer composites (each call is a separate layer), or "
                             f"raise the limit with {MAX_MODULES_ENV}=N")


def compile(source, anatomy: str | None = None, *, form: str = "auto",
            memory_limit: int | str | None = None, max_modules: int | None = None,
            **dims: int) -> AnatModule:
    """Compile an anatomy to an nn.Module.

    `source` is a path to a .anat file, .anat text, a zoo name (`"ssd"`, `"ssd_core"`), a
    loaded Program or a Diagram;
    `anatomy` names the anatomy (default: the file's last one); `dims` override its dims.
    `form`: "parallel" (the explicit quadratic graph), "chunked" (semiseparable contractions
    through anatomy.kernels), or "auto" (chunked where it applies, fused attention too).
    A module whose parameters would not fit in `memory_limit` (bytes or "8G"; default: the
    memory available, `lowering/memory.py`) is refused before anything is allocated, and so
    is one that would build more than `max_modules` modules (`guard_modules`).
    """
    from anatomy.program import load, resolve_zoo
    if isinstance(source, (str, Path)) and anatomy is None:  # a zoo name: that anatomy
        anatomy = (resolve_zoo(source) or (None, None))[1]
    if isinstance(source, Diagram):
        diagram = source
    else:
        program = source if isinstance(source, Program) else load(source, strict_dims=False)
        names = list(program.own)
        if not names:
            raise AnatError(f"{program.file} defines no anatomy")
        diagram = program[anatomy] if anatomy else program[names[-1]]
    shapes = check(diagram, dims)
    from .memory import guard, module_bytes
    guard_modules(diagram, shapes, max_modules)
    guard(f"compiling {diagram.name}", module_bytes(shapes), memory_limit)
    return compile_diagram(diagram, shapes, form)

