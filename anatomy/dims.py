"""Dims: the named sizes of an anatomy (`dims h = 8, p = d / h`), evaluated with overrides."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import AnatError, SourceLoc, did_you_mean

MAX_DIM = 2**40  # a guard against absurd sizes (and huge-integer arithmetic) from typos


@dataclass(frozen=True)
class DimExpr:
    """An integer expression over dims: numbers, names, + - * and exact /."""

    op: str  # "num" | "ref" | "+" | "-" | "*" | "/"
    args: tuple

    def refs(self) -> set[str]:
        if self.op == "ref":
            return {self.args[0]}
        if self.op == "num":
            return set()
        return set().union(*(a.refs() for a in self.args))

    def __str__(self) -> str:
        if self.op in ("num", "ref"):
            return str(self.args[0])
        a, b = self.args
        def paren(x: DimExpr, right: bool) -> str:
            s = str(x)
            weak = x.op in ("+", "-")
            if weak and (self.op in ("*", "/") or (right and self.op == "-")):
                return f"({s})"
            if right and self.op == "/" and x.op in ("*", "/"):
                return f"({s})"
            return s
        return f"{paren(a, False)} {self.op} {paren(b, True)}"


def evaluate(expr: DimExpr, env: dict[str, int], name: str, loc: SourceLoc | None) -> int:
    if expr.op == "num":
        return expr.args[0]
    if expr.op == "ref":
        return env[expr.args[0]]
    a = evaluate(expr.args[0], env, name, loc)
    b = evaluate(expr.args[1], env, name, loc)
    if expr.op == "+":
        value = a + b
    elif expr.op == "-":
        value = a - b
    elif expr.op == "*":
        value = a * b
    else:
        if b == 0 or a % b:
            raise AnatError(f"dim {name} = {expr} = {a} / {b} is not a whole number", loc,
                            hint="choose dims so that the division is exact")
        value = a // b
    if abs(value) > MAX_DIM:
        raise AnatError(f"dim {name} = {expr} is too large ({value})", loc)
    return value


def resolve(dims: dict, overrides: dict[str, int], where: str) -> dict[str, int]:
    """Evaluate every dim with a value; overrides replace defaults. Dims without a value, and
    dims derived from them, stay out of the result (their axes are sized by inference)."""
    for key, value in overrides.items():
        if key not in dims:
            raise AnatError(f"`{key}` is not a dim of {where}",
                            hint=did_you_mean(key, dims, "dim"))
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise AnatError(f"dim {key} must be a positive integer, got {value!r}")
    env: dict[str, int] = {}
    state: dict[str, str] = {}

    def visit(name: str, chain: list[str]) -> None:
        if name in env or state.get(name) == "absent":
            return
        if state.get(name) == "visiting":
            cycle = " -> ".join(chain + [name])
            raise AnatError(f"dims depend on each other in a cycle: {cycle}", dims[name].loc)
        dim = dims[name]
        if name in overrides:
            env[name] = overrides[name]
            return
        if dim.expr is None:
            state[name] = "absent"
            return
        state[name] = "visiting"
        for ref in sorted(dim.expr.refs()):
            if ref not in dims:
                raise AnatError(f"dim {name} refers to unknown dim `{ref}`", dim.loc,
                                hint=did_you_mean(ref, dims, "dim"))
            visit(ref, chain + [name])
        if any(ref not in env for ref in dim.expr.refs()):
            state[name] = "absent"  # derived from a dim without value: inferred, like it
            return
        value = evaluate(dim.expr, env, name, dim.loc)
        if value <= 0:
            raise AnatError(f"dim {name} = {dim.expr} = {value} is not positive", dim.loc)
        env[name] = value
        state[name] = "done"

    for name in dims:
        visit(name, [])
    return env
