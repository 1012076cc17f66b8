"""Rendering: diagrams as SVG string diagrams (through graphviz), proofs as step-by-step
pictures, and a gallery of a directory of .anat files. Conventions: docs/rendering.md.

- `to_svg(diagram, depth=1, highlight=())`, `to_dot(...)`: one picture;
- `render_gallery(directory, out_dir)`: index.html with every anatomy's picture;
- `render_proof(steps, out_dir)`: one SVG per rewrite step and an index.html
  (`proof_pictures(proof, out_dir)` for an anatomy.rewrite.Proof);
  `changed_boxes(before, after)`: the boxes a step rewrote (its highlight).
"""

from .gallery import render_gallery
from .picture import to_dot, to_svg
from .proof import Step, changed_boxes, proof_pictures, render_proof

__all__ = ["Step", "changed_boxes", "proof_pictures", "render_gallery", "render_proof", "to_dot",
           "to_svg"]
