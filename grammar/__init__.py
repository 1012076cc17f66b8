"""The .anat front end: text to diagrams.

Three steps, one module each:

- `parser` — the lark LALR parser for `anat.lark` (the grammar, readable on its own), with a
  post-lexer that lets brackets span lines, and syntax errors turned into located AnatErrors
  that name the expected tokens in words;
- `syntax` — a lark Transformer, one method per grammar rule, from lark's tree to typed,
  frozen syntax nodes with source positions (`read(text, file)` -> `SourceFile`);
- `builder` — `AnatomyBuilder`, from one `anatomy` declaration to a `Diagram` of the IR
  (anatomy/ir.py): one box per statement, nested expressions on anonymous wires, with every
  check the text alone decides (names, arity, axis bookkeeping, contraction rules).

`anatomy.program` loads files (resolving `use`, refusing cycles) through `syntax.read` and the
builder; `anatomy.shapes` then sizes every axis. docs/design.md explains the choices.
"""
