"""Lowering: diagrams to torch.fx graphs and nn.Modules, in parallel, chunked and recurrent
forms. `compile(...)` is the entry point (also exported as `anatomy.compile`); `grow(...)`
grows a compiled model along a dim (TokenFormer's progressive scaling; `anatomy.grow`).
"""

from .growth import grow
from .module import AnatModule, compile

__all__ = ["AnatModule", "compile", "grow"]
