"""Lowering: diagrams to torch.fx graphs and nn.Modules, in parallel, chunked and recurrent
forms. `compile(...)` is the entry point (also exported as `anatomy.compile`).
"""

from .module import AnatModule, compile

__all__ = ["AnatModule", "compile"]
