"""The model a search trains for each variant: a token embedding, `layers` blocks, a final
RMS norm and a linear head. The block is the .anat template zoo/search/block.anat (norm,
mixer, residual; norm, MLP, residual) with the variant filled in as its mixer, compiled by
`anatomy.compile`: each block is the variant's diagram, lowered, with its own weights.
Positions (none, learned, rope) are anatomy.search.positions.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from anatomy.ir import Diagram
from anatomy.program import load, zoo_dir

from .template import instantiate, with_anatomy

BLOCK_FILE = zoo_dir() / "search" / "block.anat"


def block_diagram(variant: Diagram, block_file: str | Path = BLOCK_FILE) -> Diagram:
    """The block template with `variant` (a filled template, x[t, d] -> y[t, d]) as its
    mixer, at the variant's width d."""
    d = variant.shapes.size(variant.inputs[0].axes[-1])
    program = load(block_file, strict_dims=False, d=d)
    templates = [a for a in program if any(b.op == "slot" for b in a.boxes)]
    block = templates[0]
    (slot,) = {b.attr("slot") for b in block.boxes if b.op == "slot"}
    merged = with_anatomy(program, variant, "variant", slot)
    return instantiate(merged[block.name], {slot: "variant"})


class LanguageModel(nn.Module):
    """embedding (+ learned positions) -> blocks -> RMS norm -> head; tokens [batch, time]
    to logits. `positions="learned"` adds a learned embedding of each of `max_len`
    positions to the token embedding (rotary positions are in the blocks instead:
    anatomy.search.positions)."""

    def __init__(self, block: Diagram, vocab: int, layers: int, positions: str = "none",
                 max_len: int = 0):
        super().__init__()
        from anatomy.lowering import compile as compile_diagram
        width = block.shapes.size(block.inputs[0].axes[-1])
        self.embed = nn.Embedding(vocab, width)
        self.positions = nn.Embedding(max_len, width) if positions == "learned" else None
        self.blocks = nn.ModuleList(compile_diagram(block, **dict(block.shapes.dims))
                                    for _ in range(layers))
        self.norm = nn.RMSNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)

    def forward(self, tokens: torch.Tensor, scored: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [batch, time, vocab]; with a boolean `scored` [batch, time], only those
        positions' logits, [scored positions, vocab] (the head is the costly part at a large
        vocabulary, and recall tasks score a few positions)."""
        x = self.embed(tokens)
        if self.positions is not None:
            x = x + self.positions.weight[:tokens.shape[1]]
        for block in self.blocks:
            x = block(x)
        if scored is not None:
            x = x[scored]
        return self.head(self.norm(x))
