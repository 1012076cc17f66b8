"""Execution forms: which boxes get a structured lowering instead of the generic one."""

from __future__ import annotations


def choose_rules(form: str):
    """The box-rewriting hook for this form (None: the generic, parallel lowering)."""
    return None
