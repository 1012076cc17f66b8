"""`print(module)` for a compiled anatomy: its name, form and ports, and each parameter with
its named axes and sizes and what it is for: the diagram's statement that uses it (the first
named wire it flows into), as .anat text. Composite boxes are listed as submodules, nested
as nn.Module's repr nests them.
"""

from __future__ import annotations

from anatomy.printer import _Printer

WIDTH = 100  # a line longer than this is cut with "..."


def describe(module) -> str:
    d, shapes = module.diagram, module.shapes
    ins = ", ".join(shapes.describe(p.name, p.axes) for p in d.inputs)
    outs = ", ".join(shapes.describe(p.name, p.axes) for p in d.outputs)
    count = sum(p.numel() for p in module.parameters())
    lines = [f"{d.name}({ins}) -> {outs}  [{module.form} form, {count:,} parameters]"]
    if d.doc:
        lines.append(_cut(f"  # {d.doc.splitlines()[0]}"))
    statements = _statements(d)
    for name, param in module.named_parameters(recurse=False):
        axes = d.wires[name].axes if name in d.wires else ()
        lines.append(_cut(f"  ({name}): {_tensor(param, axes)}{_purpose(d, statements, name)}"))
    for name, buffer in module.named_buffers(recurse=False):
        lines.append(f"  ({name}): buffer {_tensor(buffer, ())}")
    for name, child in module.named_children():
        text = describe(child) if hasattr(child, "diagram") else repr(child)
        lines.append(f"  ({name}): " + text.replace("\n", "\n  "))
    return "\n".join(lines)


def _tensor(x, axes: tuple[str, ...]) -> str:
    """`Parameter[d=32, h=4]` (axis names where the diagram gives them), plus the dtype and
    device where they are not float32 on the CPU."""
    kind = "Parameter" if x.__class__.__name__ == "Parameter" else "Tensor"
    sizes = [f"{a}={n}" for a, n in zip(axes, x.shape)] if len(axes) == x.dim() else \
        [str(n) for n in x.shape]
    extra = "" if str(x.dtype) == "torch.float32" else f" {str(x.dtype).removeprefix('torch.')}"
    extra += "" if x.device.type == "cpu" else f" on {x.device}"
    frozen = "" if x.requires_grad or kind == "Tensor" else " (frozen)"
    return f"{kind}[{', '.join(sizes)}]{extra}{frozen}"


def _statements(d) -> dict[str, str]:
    """The .anat statement defining each named wire, as `anatomy print` writes it."""
    out = {}
    for line in _Printer(d).program()[1:]:
        target = line.strip().split("[")[0].split(" =")[0]
        out.setdefault(target, line.strip())
    return out


def _cut(text: str) -> str:
    return text if len(text) <= WIDTH else text[:WIDTH - 3] + "..."


def _purpose(d, statements: dict[str, str], wire: str) -> str:
    """`  used in: xs[t, h, p] = linear(x)` (the statements of the named wires it reaches
    first; more than one: the others by name)."""
    boxes, seen, todo = [], set(), [wire]
    while todo:
        for box in d.consumers(todo.pop(0)):
            if box.id in seen:
                continue
            seen.add(box.id)
            named = [w for w in box.outputs if not d.wires[w].anonymous]
            if named:
                boxes.append(box)
            else:
                todo.extend(box.outputs)
    if not boxes:
        return "  (unused)"
    first = next(w for w in boxes[0].outputs if not d.wires[w].anonymous)
    text = statements.get(first, first)
    others = [w for b in boxes[1:] for w in b.outputs if not d.wires[w].anonymous]
    also = f"  (also in {', '.join(others)})" if others else ""
    return f"  used in: {text}{also}"
