"""Every class of user error raises AnatError with a clear message, at the right place.

Each case names the line and column of the error and the text found there (`at`), so the
expected position is checked against the source itself, not copied from the tool's output.
"""

from __future__ import annotations

import pytest

import anatomy
from anatomy import AnatError

HEAD = "anatomy a(x[t, d]) -> y[t, d]\n"


def error_of(text: str, **dims) -> AnatError:
    with pytest.raises(AnatError) as info:
        anatomy.load(text, **dims)
    assert type(info.value) is AnatError
    return info.value


def assert_points_at(e: AnatError, text: str, line: int, col: int, at: str,
                     file: str = "<string>") -> None:
    """e is located at (line, col), where the source has `at`; str(e) shows it with a caret."""
    assert (e.loc.line, e.loc.col) == (line, col), str(e)
    assert e.loc.file == file
    source_line = text.split("\n")[line - 1]
    assert source_line[col - 1:].startswith(at), (source_line, col, at)
    rendered = str(e).split("\n")
    assert rendered[0].startswith(f"{file}:{line}:{col}: error: ")
    gutter = f"{line:>4} | "
    assert rendered[1] == gutter + source_line
    assert rendered[2] == " " * (len(gutter) + col - 1) + "^"


def check(text: str, line: int, col: int, at: str, *fragments: str, hint: str | None = None,
          **dims) -> AnatError:
    e = error_of(text, **dims)
    assert_points_at(e, text, line, col, at)
    for f in fragments:
        assert f in e.message, (f, e.message)
    if hint is not None:
        assert e.hint is not None and hint in e.hint, (hint, e.hint)
    return e


# -- syntax -------------------------------------------------------------------------------


def test_unexpected_token():
    text = HEAD + "  y[t, d] = x + * x\n"
    e = check(text, 2, 17, "* x", "unexpected '*'")
    assert "a name" in e.hint  # what could have come instead


def test_unexpected_character():
    text = HEAD + "  y[t, d] = x $ 2\n"
    check(text, 2, 15, "$", "unexpected character '$'")


def test_unexpected_end_of_line():
    text = HEAD + "  y[t, d] = x +\n"
    check(text, 2, 16, "", "unexpected end of line")


@pytest.mark.parametrize("text", ["anatomy a(x[t, d]) -> y[t, d",
                                  "anatomy a(x[t, d]) -> y[t, d\n\n  # more\n\n"])
def test_end_of_file(text):
    """The end of the file is placed just after the last token, not on trailing blanks."""
    e = check(text, 1, 29, "", "unexpected end of file", hint="a `[` is not closed")
    assert "]" in e.hint


def test_signature_without_outputs():
    check("anatomy a(x[t, d]) ->\n", 1, 10, "(x[t", "a signature needs at least one output")


def test_unclosed_bracket_at_end_of_file():
    text = HEAD + "  y[t, d] = relu(x\n"
    e = check(text, 2, 19, "", "unexpected end of file", hint="a `(` is not closed")
    (note_loc, note), = e.related
    assert (note_loc.line, note_loc.col) == (2, 17) and "not closed" in note


def test_unclosed_bracket_shows_up_on_a_later_line():
    """Newlines inside brackets are skipped, so the error is on the next statement; the
    note points back at the bracket that is still open."""
    text = HEAD + "  y[t, d] = x[t, d\n  z[t, d] = x\n"
    e = check(text, 3, 3, "z[t", "unexpected 'z'", hint="a `[` is not closed")
    assert (e.related[0][0].line, e.related[0][0].col) == (2, 14)


def test_newlines_inside_brackets_continue_the_statement():
    text = HEAD + "  y[t, d] = relu(\n    x\n  )\n"
    (box,) = anatomy.load(text)["a"].boxes
    assert box.op == "relu"


@pytest.mark.parametrize("text, line, col, at", [
    ("anatomy (x[t]) -> y[t]\n", 1, 9, "("),
    ("anatomy a(x[t, d]) -> y[t, d]\n  y[t, d] = = x\n", 2, 13, "= x"),
    ("anatomy a(x[t, d]) -> y[t, d]\n  y[t, d] x\n", 2, 11, "x"),
    ("anatomy a(x[t, d]) -> y[t, d]\n  y[t, d] = x)\n", 2, 14, ")"),
    ("y[t, d] = x\n", 1, 1, "y["),
    ("anatomy a(x[t, d]) -> y[t, d]\n  param w ~ zeros\n", 2, 11, "~"),
])
def test_more_syntax_errors(text, line, col, at):
    check(text, line, col, at, "unexpected")


def test_line_numbers_count_newlines_only():
    """Form feeds and Unicode line separators in comments do not shift the line shown."""
    text = "# a\x0c comment\u2028 here\n" + HEAD + "  y[t, d] = xx\n"
    check(text, 3, 13, "xx", "unknown name `xx`")


def test_crlf_line_endings():
    text = (HEAD + "  y[t, d] = xx\n").replace("\n", "\r\n")
    e = check(text.replace("\r\n", "\n"), 2, 13, "xx", "unknown name")
    e2 = error_of(text)
    assert (e2.loc.line, e2.loc.col) == (e.loc.line, e.loc.col)
    assert "\r" not in str(e2)


# -- unknown names, with suggestions -------------------------------------------------


def test_unknown_wire():
    check(HEAD + "  y[t, d] = xx\n", 2, 13, "xx", "unknown name `xx`", hint="did you mean `x`?")


def test_unknown_wire_indexed():
    check(HEAD + "  y[t, d] = xs[t, d]\n", 2, 13, "xs", "unknown name `xs`",
          hint="did you mean `x`?")


def test_unknown_box():
    check(HEAD + "  y[t, d] = relux(x)\n", 2, 13, "relux", "unknown box `relux`",
          hint="did you mean `relu`?")


def test_unknown_box_suggests_an_anatomy():
    text = HEAD + "  y[t, d] = mixer(x)\nanatomy mixed(x[t, d]) -> y[t, d]\n  y[t, d] = x\n"
    check(text, 2, 13, "mixer", "unknown box `mixer`", hint="did you mean `mixed`?")


def test_unknown_dim_in_a_dim_expression():
    check(HEAD + "  dims d = 4, p = dd / 2\n  y[t, d] = x\n", 2, 15, "p = dd",
          "dim p refers to unknown dim `dd`", hint="did you mean `d`?")


def test_unknown_slot():
    text = "slot mixer(x[t, d]) -> y[t, d]\n" + HEAD + "  y[t, d] = slot mixr(x)\n"
    check(text, 3, 13, "slot mixr", "unknown slot `mixr`", hint="did you mean `mixer`?")


def test_unknown_slot_in_fills():
    text = "slot mixer(x[t, d]) -> y[t, d]\n" \
           "anatomy a(x[t, d]) -> y[t, d] fills mixr\n  y[t, d] = x\n"
    check(text, 2, 1, "anatomy a", "fills unknown slot `mixr`", hint="did you mean `mixer`?")


def test_unknown_initialiser():
    check(HEAD + "  param w[d] ~ normall(1)\n  y[t, d] = x * w\n", 2, 16, "normall",
          "unknown initialiser `normall`", hint="did you mean `normal`?")


def test_unknown_initialiser_in_linear():
    check(HEAD + "  y[t, d] = linear(x, in=[d], init=zeroes)\n", 2, 13, "linear",
          "unknown initialiser `zeroes`", hint="did you mean `zeros`?")


def test_unknown_option():
    check(HEAD + "  y[t, d] = softmax(x, d, masc=x)\n", 2, 32, "x)",
          "softmax has no option `masc`", hint="did you mean `mask`?")


def test_unknown_option_of_linear():
    check(HEAD + "  y[t, d] = linear(x, bais=true)\n", 2, 13, "linear",
          "linear has no option `bais`", hint="did you mean `bias`?")


def test_initialiser_used_as_a_box():
    check(HEAD + "  y[t, d] = zeros(x)\n", 2, 13, "zeros", "is an initialiser, not a box",
          hint="param")


def test_unknown_anatomy_in_program_lookup():
    program = anatomy.load(HEAD + "  y[t, d] = x\n")
    with pytest.raises(AnatError, match="no anatomy named `b`") as info:
        program["b"]
    assert "did you mean `a`" in info.value.hint or "a" in info.value.hint


# -- redefinition -------------------------------------------------------------------------


def test_wire_assigned_twice():
    text = HEAD + "  z[t, d] = x\n  z[t, d] = relu(x)\n  y[t, d] = z\n"
    e = check(text, 3, 3, "z[t, d] = relu", "`z` is already defined")
    (first, note), = e.related
    assert first.line == 2 and "first defined" in note
    assert "   2 |   z[t, d] = x" in str(e)


def test_input_reassigned():
    check(HEAD + "  x[t, d] = relu(x)\n  y[t, d] = x\n", 2, 3, "x[t", "`x` is already defined")


def test_param_shadowing_a_wire():
    check(HEAD + "  param x[d]\n  y[t, d] = x\n", 2, 3, "param x", "`x` is already defined")


def test_wire_named_like_a_builtin():
    check(HEAD + "  relu[t, d] = x\n  y[t, d] = x\n", 2, 16, "x",
          "`relu` is the name of a built-in box")


def test_anatomy_defined_twice():
    text = HEAD + "  y[t, d] = x\n" + HEAD + "  y[t, d] = x\n"
    e = check(text, 3, 1, "anatomy a", "`a` is defined twice")
    assert e.related[0][0].line == 1


def test_slot_and_anatomy_with_one_name():
    text = "slot a(x[t, d]) -> y[t, d]\n" + HEAD + "  y[t, d] = x\n"
    check(text, 2, 1, "anatomy a", "`a` is defined twice")


def test_dim_declared_twice():
    e = check(HEAD + "  dims d = 4, d = 5\n  y[t, d] = x\n", 2, 15, "d = 5",
              "dim `d` is declared twice")
    assert (e.related[0][0].line, e.related[0][0].col) == (2, 8)


def test_port_twice_in_signature():
    check("anatomy a(x[t, d], x[t, d]) -> y[t, d]\n  y[t, d] = x\n", 1, 20, "x[t",
          "port `x` appears twice")


def test_axis_listed_twice():
    check("anatomy a(x[t, t]) -> y[t]\n  y[t] = x\n", 1, 16, "t]", "axis `t` is listed twice")


def test_option_given_twice():
    check(HEAD + "  y[t, d] = softmax(x, d, mask=x, mask=x)\n", 2, 35, "mask=x)",
          "option `mask` given twice")


# -- axes -----------------------------------------------------------------------------


def test_axis_rank_mismatch_when_indexing():
    e = check(HEAD + "  y[t, d] = x[t]\n", 2, 13, "x[t]", "`x` has 2 axes [t, d]",
              "indexed with 1")
    assert e.related[0][0].line == 1  # where x is defined


def test_axis_on_the_left_not_on_the_right():
    check(HEAD + "  y[t, d] = x[t, e]\n", 2, 3, "y[t, d]",
          "axis d is on the left but not on the right", "[t, e]")


def test_axis_on_the_left_not_on_the_right_of_a_product():
    check(HEAD + "  z[t, s] = x * x\n  y[t, d] = x\n", 2, 3, "z[t, s]",
          "axis s is on the left but not on the right")


def test_summing_over_a_sum_whose_term_lacks_the_axis():
    check(HEAD + "  y[t, d] = x * x[s, d] + x\n", 2, 3, "y[t, d]",
          "axis s is summed over the whole right side", "counted size(s) times")


def test_summing_over_a_difference_whose_term_lacks_the_axis():
    check(HEAD + "  z[t] = x[t, d] - x[t, s]\n  y[t, d] = x\n", 2, 3, "z[t]",
          "axis s is summed", "lacks it")


def test_output_never_assigned():
    check(HEAD + "  z[t, d] = x\n", 1, 23, "y[t, d]", "output `y` is never assigned",
          hint="y[t, d] = ...")


def test_port_both_input_and_output():
    e = check("anatomy a(x[t, d], y[t, d]) -> y[t, d]\n  z[t, d] = x\n", 1, 32, "y[t, d]",
              "port `y` appears twice")
    assert e.related[0][0].col == 20


def test_output_with_wrong_axes():
    e = check(HEAD + "  y[d, t] = x\n", 2, 13, "x", "output `y` has axes [d, t]",
              "signature says [t, d]")
    assert e.related[0][0].line == 1 and e.related[0][0].col == 23


def test_output_with_an_axis_summed_away():
    check(HEAD + "  y[t] = x\n", 2, 10, "x", "output `y` has axes [t]")


def test_list_outside_an_option():
    check(HEAD + "  y[t, d] = [x]\n", 2, 13, "[x]", "a [list] is only allowed as an option")


def test_axis_argument_that_is_a_wire():
    check(HEAD + "  z[t, d] = x\n  y[t, d] = softmax(x, z)\n", 3, 24, "z)",
          "softmax expects an axis name", "`z` is a wire")


def test_axis_argument_that_is_an_expression():
    check(HEAD + "  y[t, d] = softmax(x, 2)\n", 2, 24, "2)", "softmax expects an axis name")


def test_softmax_along_an_axis_the_input_lacks():
    check(HEAD + "  y[t, d] = softmax(x, s)\n", 2, 13, "softmax", "softmax works along `s`",
          "[t, d]")


def test_mask_with_an_axis_the_scores_lack():
    check(HEAD + "  y[t, d] = softmax(x, d, mask=causal(t, s))\n", 2, 13, "softmax",
          "the mask has axis s that the scores lack")


# -- sizes ------------------------------------------------------------------------------


def test_size_conflict_names_both_sizes_and_the_other_line():
    text = HEAD + "  dims d = 8, c = 4, r = 2\n  a[t, c], b[t, r] = split(x)\n  y[t, d] = x\n"
    e = check(text, 3, 3, "a[t, c]", "axis d is 6 here but 8 at line 2")
    (other, note), = e.related
    assert (other.line, other.col) == (2, 8) and "d is 8" in note


def test_size_conflict_through_renaming():
    """Indexing x[t, e] says size(e) = size(d): 32 and 64 cannot both hold."""
    text = HEAD + "  dims d = 64, e = 32\n  z[t, e] = x[t, e]\n  y[t, d] = x\n"
    e = check(text, 3, 13, "x[t, e]", "64", "32", "line 2")
    assert e.related[0][0].line == 2


def test_size_conflict_from_an_override():
    text = HEAD + "  dims d = 8, c = 4, r = 4\n  a[t, c], b[t, r] = split(x)\n  y[t, d] = x\n"
    assert anatomy.load(text)["a"].shapes.size("d") == 8
    check(text, 3, 3, "a[t, c]", "axis d is 8 here but 10 at line 2", d=10)


def test_size_conflict_between_mask_axes():
    text = HEAD + "  dims d = 4, e = 8\n  m[t, d, e] = causal(d, e) * x\n  y[t, d] = x\n"
    check(text, 3, 16, "causal", "8", "4", "line 2")


def test_non_integer_derived_dim():
    check(HEAD + "  dims d = 64, h = 5, p = d / h\n  y[t, d] = x\n", 2, 23, "p = d / h",
          "dim p = d / h = 64 / 5 is not a whole number")


def test_non_integer_derived_dim_from_an_override():
    text = HEAD + "  dims d = 64, h = 8, p = d / h\n  y[t, d] = x\n"
    assert anatomy.load(text)["a"].shapes.size("p") == 8
    check(text, 2, 23, "p = d / h", "64 / 3 is not a whole number", h=3)


def test_non_positive_dims():
    check(HEAD + "  dims d = 4 - 8\n  y[t, d] = x\n", 2, 8, "d = 4", "is not positive")
    check(HEAD + "  dims d = 0\n  y[t, d] = x\n", 2, 8, "d = 0", "is not positive")


def test_dim_that_is_not_a_whole_number():
    check(HEAD + "  dims d = 2.5\n  y[t, d] = x\n", 2, 12, "2.5", "whole numbers, not 2.5")


def test_dim_that_is_not_arithmetic():
    check(HEAD + "  dims d = relu(4)\n  y[t, d] = x\n", 2, 12, "relu",
          "a dim is a number, another dim")


def test_huge_dims():
    check(HEAD + "  dims d = 99999999999999999999\n  y[t, d] = x\n", 2, 12, "9999",
          "too large")
    check(HEAD + "  dims d = 1000000 * 1000000 * 1000000\n  y[t, d] = x\n", 2, 8, "d =",
          "too large")


@pytest.mark.parametrize("stmt, col, at", [
    ("y[t, d] = x * 1e400", 17, "1e400"),
    ("y[t, d] = x * 1" + "0" * 400, 17, "1000"),
    ("y[t, d] = x * 1" + "0" * 5000, 17, "1000"),  # int() of it would raise ValueError
    ("y[t, d] = layernorm(x, d, eps=1e999)", 33, "1e999"),
])
def test_numbers_too_large_to_write_back(stmt, col, at):
    """Numbers that overflow a float could not be printed back as numbers (`inf`)."""
    check(HEAD + f"  {stmt}\n", 2, col, at, "is too large")


def test_initialiser_number_too_large():
    check(HEAD + "  param w[d] ~ log_uniform(1e4001, 16)\n  y[t, d] = x * w\n", 2, 28,
          "1e4001", "the number 1e4001 is too large")


def test_dim_with_thousands_of_digits():
    check(HEAD + "  dims d = 1" + "0" * 5000 + "\n  y[t, d] = x\n", 2, 12, "1000", "too large")


def test_large_numbers_that_fit_are_kept():
    d = anatomy.load(HEAD + "  y[t, d] = x * 00000000000000000000007 * 1e300\n")["a"]
    values = [b.attr("value") for b in d.boxes if b.op == "const"]
    assert values == [7, 1e300] and isinstance(values[0], int)


@pytest.mark.parametrize("dims, chain", [
    ("a = b + 1, b = a * 2", "a -> b -> a"),
    ("a = a", "a -> a"),
    ("a = b, b = c, c = a", "a -> b -> c -> a"),
])
def test_dim_cycles(dims, chain):
    check(HEAD + f"  dims {dims}\n  y[t, d] = x\n", 2, 8, "a =",
          f"dims depend on each other in a cycle: {chain}")


def test_unknown_override_dim_at_load():
    text = HEAD + "  dims d = 8\n  y[t, d] = x\n"
    e = error_of(text, dd=4)
    assert "`dd` is not a dim of any anatomy" in e.message


def test_unknown_override_dim_in_check():
    d = anatomy.load(HEAD + "  dims d = 8\n  y[t, d] = x\n")["a"]
    with pytest.raises(AnatError, match="`dd` is not a dim of anatomy a") as info:
        d.check(dd=4)
    assert info.value.hint == "did you mean `d`?"


@pytest.mark.parametrize("value", [0, -3, 2.5, True, "8"])
def test_bad_override_values(value):
    d = anatomy.load(HEAD + "  dims d = 8\n  y[t, d] = x\n")["a"]
    with pytest.raises(AnatError, match="dim d must be a positive integer"):
        d.check(d=value)


# -- builtins: arity and options ---------------------------------------------------------


@pytest.mark.parametrize("call, fragment", [
    ("softmax(x)", "softmax takes 1 tensor and 1 axis name, got 1 arguments"),
    ("relu(x, x)", "relu takes 1 tensor, got 2 arguments"),
    ("causal(t) * x", "causal takes 2 axis names, got 1 arguments"),
    ("layernorm(x)", "layernorm takes 1 tensor(s) and at least one axis"),
    ("rope(x, t)", "rope takes 1 tensor and 2 axis names"),
    ("exp()", "exp takes 1 tensor, got 0 arguments"),
    ("index(t, d) * x", "index takes 1 axis name, got 2"),
])
def test_wrong_arity_of_builtins(call, fragment):
    e = check(HEAD + f"  y[t, d] = {call}\n", 2, 13, call.split("(")[0], fragment)
    assert call.split("(")[0] + "(" in e.hint  # the usage line


def test_concat_needs_two_inputs():
    text = HEAD + "  dims d = 4\n  y[t, d] = concat(x)\n"
    check(text, 3, 13, "concat", "concat takes two or more tensors")


@pytest.mark.parametrize("call, col, at, fragment", [
    ("layernorm(x, d, affine=3)", 36, "3)", "option `affine` of layernorm is true or false"),
    ("layernorm(x, d, eps=foo)", 33, "foo", "expected a number here"),
    ("window(t, s) * x[s, d]", 13, "window", "window needs size=N with N >= 1"),
    ("causal(t, t) * x", 13, "causal", "causal needs two different axes"),
    ("linear(x, bias=1)", 13, "linear", "option `bias` of linear is true or false"),
    ("linear(x, in=[e])", 13, "linear", "linear maps from axis `e`"),
    ("softmax(mask=x, x, d)", 29, "x, d", "positional argument after a keyword option"),
    ("softmax(x, d, mask=[x])", 32, "[x]", "a [list] is only allowed as an option"),
    ("softmax(x, d, mask=causal(t, s))", 13, "softmax", "the mask has axis s"),
])
def test_bad_options(call, col, at, fragment):
    check(HEAD + f"  y[t, d] = {call}\n", 2, col, at, fragment)


def test_linear_without_visible_output_axes():
    check(HEAD + "  y[t, d] = relu(linear(x)) * linear(x)\n", 2, 18, "linear(x)) *",
          "linear cannot see its output axes", hint="out=")


def test_initialiser_arity():
    check(HEAD + "  param w[d] ~ normal(1, 2, 3)\n  y[t, d] = x * w\n", 2, 16, "normal",
          "initialiser `normal` takes 0 or 1 or 2 numbers, got 3")
    check(HEAD + "  param w[d] ~ uniform(1)\n  y[t, d] = x * w\n", 2, 16, "uniform",
          "takes 2 numbers, got 1")


def test_fan_in_over_an_axis_the_param_lacks():
    check(HEAD + "  param w[d] ~ fan_in(e)\n  y[t, d] = x * w\n", 2, 23, "e)",
          "fan_in takes axes of the parameter")


def test_share_with_heads_not_divisible_by_groups():
    text = "anatomy a(x[t, g, n]) -> y[t, h, n]\n  dims g = 3, h = 8\n" \
           "  y[t, h, n] = share(x, g, h)\n"
    check(text, 3, 16, "share", "8 heads (h) cannot be split into 3 groups (g)")
    # and fine once they divide
    assert anatomy.load(text, g=4)["a"].shapes.size("g") == 4


def test_share_heads_axis_already_present():
    text = "anatomy a(x[t, g, h]) -> y[t, h]\n  y[t, h] = share(x, g, h)\n"
    check(text, 2, 13, "share", "share makes the heads axis `h`")


def test_rope_on_odd_size():
    text = "anatomy a(x[t, n]) -> y[t, n]\n  dims n = 7\n  y[t, n] = rope(x, t, n)\n"
    check(text, 3, 13, "rope", "rope rotates pairs, but axis n has odd size 7")
    assert anatomy.load(text, n=8)["a"].shapes.size("n") == 8


def test_xpos_on_odd_size_from_an_override():
    text = "anatomy a(x[t, n]) -> y[t, n]\n  dims n = 8\n  y[t, n] = xpos(x, t, n)\n"
    check(text, 3, 13, "xpos", "xpos rotates pairs", "odd size 5", n=5)


def test_decay_input_with_the_key_axis():
    text = "anatomy a(g[t, s]) -> y[t, s]\n  y[t, s] = decay(g, t, s)\n"
    check(text, 2, 13, "decay", "decay adds the key axis `s`")


def test_split_with_two_new_axes_in_a_target():
    text = HEAD + "  a[t, c, e], b[t, r] = split(x)\n  y[t, d] = x\n"
    check(text, 2, 3, "a[t, c, e]", "each target of split must have exactly one axis")


def test_several_targets_need_a_several_output_box():
    check(HEAD + "  a[t, d], b[t, d] = relu(x)\n  y[t, d] = x\n", 2, 3, "a[t",
          "relu has one output, but there are 2 targets", hint="split or an anatomy call")
    check(HEAD + "  a[t, d], b[t, d] = x\n  y[t, d] = x\n", 2, 3, "a[t",
          "several targets need a box with several outputs")


def test_concat_without_target_axes():
    check(HEAD + "  y[t, d] = concat(x, x) * x\n", 2, 13, "concat",
          "concat takes its axes from its target")


@pytest.mark.parametrize("call", ["softmax(q * k[s, n], s)", "l2normalise(q * k[s, n], s)"])
def test_a_sum_after_a_normaliser_is_refused(call):
    text = (f"anatomy a(q[t, n], k[t, n]) -> w[t, s]\n  dims n = 4\n  w[t, s] = {call}\n")
    check(text, 3, 3, "w[t, s]", "axis n would be summed after",
          hint="contract in its own statement first")


def test_reshape_without_target_axes():
    text = "anatomy a(x[t, d]) -> y[t, h, p]\n  dims d = 8, h = 2\n" \
           "  y[t, h, p] = reshape(x) * 2\n"
    check(text, 3, 16, "reshape", "reshape takes its axes from its target")


def test_reshape_with_nothing_to_reshape():
    check(HEAD + "  y[t, d] = reshape(x)\n", 2, 13, "reshape", "nothing to reshape",
          hint="a target in another order is a plain")


def test_reshape_of_the_time_axis():
    text = HEAD + "  q[h, p] = reshape(x)\n  y[t, d] = x\n"
    check(text, 2, 13, "reshape", "reshape would merge or split the time axis `t`")


@pytest.mark.parametrize("dims, fragment", [
    ("d = 12, h = 5, p = 2", "reshape: [d=12] has 12 entries but [h=5, p=2] has 10"),
    ("d = 12, h = 5", "reshape: 12 entries of [d] do not split into [h, p]"),
])
def test_reshape_sizes_must_agree(dims, fragment):
    text = f"anatomy a(x[t, d]) -> y[t, h, p]\n  dims {dims}\n  y[t, h, p] = reshape(x)\n"
    check(text, 3, 16, "reshape", fragment)


# -- files: use -----------------------------------------------------------------------


def test_use_of_a_missing_file(tmp_path):
    main = tmp_path / "main.anat"
    text = 'use "nothere.anat"\n' + HEAD + "  y[t, d] = x\n"
    main.write_text(text)
    e = error_of(main)
    assert_points_at(e, text, 1, 1, "use", file=str(main))
    assert "cannot find `nothere.anat` to use" in e.message


def test_use_of_a_misspelt_zoo_file():
    e = error_of('use "core.anat"\n' + HEAD + "  y[t, d] = x\n")
    assert "cannot find `core.anat`" in e.message and "did you mean `cores.anat`" in e.hint


def test_use_cycle(tmp_path):
    (tmp_path / "a.anat").write_text('use "b.anat"\n' + HEAD + "  y[t, d] = x\n")
    b_text = '# b uses a\nuse "a.anat"\nanatomy b(x[t, d]) -> y[t, d]\n  y[t, d] = x\n'
    (tmp_path / "b.anat").write_text(b_text)
    e = error_of(tmp_path / "a.anat")
    assert "`use` cycle: a.anat -> b.anat -> a.anat" in e.message
    assert_points_at(e, b_text, 2, 1, 'use "a.anat"', file=str(tmp_path / "b.anat"))


def test_file_using_itself(tmp_path):
    (tmp_path / "a.anat").write_text('use "a.anat"\n' + HEAD + "  y[t, d] = x\n")
    e = error_of(tmp_path / "a.anat")
    assert "`use` cycle: a.anat -> a.anat" in e.message


def test_name_clash_through_use(tmp_path):
    (tmp_path / "lib.anat").write_text(HEAD + "  y[t, d] = x\n")
    text = 'use "lib.anat"\n' + HEAD + "  y[t, d] = relu(x)\n"
    (tmp_path / "main.anat").write_text(text)
    e = error_of(tmp_path / "main.anat")
    assert_points_at(e, text, 2, 1, "anatomy a", file=str(tmp_path / "main.anat"))
    assert "`a` is defined twice" in e.message


def test_error_inside_a_used_file_is_reported_there(tmp_path):
    lib = "anatomy f(x[t, d]) -> y[t, d]\n  y[t, d] = xx\n"
    (tmp_path / "lib.anat").write_text(lib)
    (tmp_path / "main.anat").write_text('use "lib.anat"\n' + HEAD + "  y[t, d] = f(x)\n")
    e = error_of(tmp_path / "main.anat")
    assert e.loc.file.endswith("lib.anat")
    assert_points_at(e, lib, 2, 13, "xx", file=e.loc.file)


def test_missing_file_path():
    e = error_of("no/such/file.anat")
    assert "no such file" in e.message and e.loc.line == 0
    assert str(e).startswith("no/such/file.anat: error:")


def test_unreadable_file(tmp_path):
    bad = tmp_path / "bad.anat"
    bad.write_bytes(b"\xff\xfe\x00 anatomy")
    e = error_of(bad)
    assert "cannot read" in e.message


# -- composites and slots -------------------------------------------------------------


def test_recursive_anatomy():
    check(HEAD + "  y[t, d] = a(x)\n", 2, 13, "a(x)", "anatomy a uses itself",
          hint="must not be recursive")


def test_mutually_recursive_anatomies():
    text = HEAD + "  y[t, d] = b(x)\nanatomy b(x[t, d]) -> y[t, d]\n  y[t, d] = a(x)\n"
    e = check(text, 4, 13, "a(x)", "uses itself")
    assert any(loc.line == 2 and "call of b" in note for loc, note in e.related)


def test_call_with_wrong_number_of_inputs():
    text = HEAD + "  y[t, d] = f(x, x)\nanatomy f(x[t, d]) -> y[t, d]\n  y[t, d] = x\n"
    check(text, 2, 13, "f(x, x)", "f takes 1 inputs", "got 2")


def test_call_with_wrong_rank():
    text = HEAD + "  y[t, d] = f(x)\nanatomy f(x[t]) -> y[t]\n  y[t] = x\n"
    check(text, 2, 13, "f(x)", "input `x` of f has axes [t] but gets [t, d]")


def test_call_with_an_unknown_dim():
    text = HEAD + "  y[t, d] = f(x, zz=3)\nanatomy f(x[t, e]) -> y[t, e]\n  dims e = 4\n" \
                  "  y[t, e] = x\n"
    check(text, 2, 13, "f(x, zz=3)", "`zz` is not a dim of anatomy f")


def test_call_with_a_dim_contradicting_its_input():
    text = HEAD + "  dims d = 8\n  y[t, d] = f(x, e=3)\nanatomy f(x[t, e]) -> y[t, e]\n" \
                  "  dims e = 4\n  y[t, e] = x\n"
    check(text, 3, 13, "f(x, e=3)", "dim e is given as 3 but its input has e = 8")


def test_call_with_a_non_integer_dim():
    text = HEAD + "  y[t, d] = f(x, e=2.5)\nanatomy f(x[t, e]) -> y[t, e]\n  y[t, e] = x\n"
    check(text, 2, 13, "f(x", "dim e must be a positive whole number")


def test_error_inside_a_callee_notes_the_call():
    """The callee's dim n has no default: it is bound from the size of the caller's input."""
    text = HEAD + "  dims d = 6\n  y[t, d] = f(x)\n" \
                  "anatomy f(x[t, n]) -> y[t, n]\n  dims n\n  y[t, n] = rope(x, t, n)\n"
    assert anatomy.load(text)["a"].shapes.callees["y"].size("n") == 6
    e = check(text, 6, 13, "rope", "odd size 3", d=3)
    assert any(loc.line == 3 and "call of f" in note for loc, note in e.related)


def test_fill_with_wrong_rank():
    text = "slot mix(x[t, d]) -> y[t, d]\n" \
           "anatomy a(x[t, d, e]) -> y[t, d] fills mix\n  y[t, d] = x\n"
    check(text, 2, 11, "x[t, d, e]", "input `x` of a has 3 axes but slot mix wants 2")


def test_fill_with_axes_in_the_wrong_order():
    text = "slot mix(x[t, d]) -> y[t, d]\n" \
           "anatomy a(x[t, d]) -> y[d, t] fills mix\n  y[d, t] = x\n"
    check(text, 2, 23, "y[d, t]", "a does not match slot mix", hint="(x[t, d]) -> y[t, d]")


def test_fill_with_wrong_number_of_inputs():
    text = "slot mix(x[t, d]) -> y[t, d]\n" \
           "anatomy a(x[t, d], z[t, d]) -> y[t, d] fills mix\n  y[t, d] = x\n"
    check(text, 2, 1, "anatomy a", "a has 2 inputs but slot mix has 1")


def test_slot_call_with_wrong_arity():
    text = "slot mix(x[t, d]) -> y[t, d]\n" + HEAD + "  y[t, d] = slot mix(x, x)\n"
    check(text, 3, 13, "slot mix", "mix takes 1 inputs")


def test_multi_output_call_assigned_to_one_target():
    text = HEAD + "  y[t, d] = f(x)\nanatomy f(x[t, d]) -> a[t, d], b[t, d]\n" \
                  "  a[t, d] = x\n  b[t, d] = x\n"
    check(text, 2, 13, "f(x)", "f has 2 outputs; assign them")


# -- nesting --------------------------------------------------------------------------


def test_brackets_nested_too_deep():
    text = HEAD + "  y[t, d] = " + "(" * 60 + "x" + ")" * 60 + "\n"
    # the 49th bracket is the first one too many
    check(text, 2, 13 + 48, "(", "brackets nested more than 48 deep")


def test_brackets_nested_at_the_limit_are_fine():
    text = HEAD + "  y[t, d] = " + "relu(" * 48 + "x" + ")" * 48 + "\n"
    assert len(anatomy.load(text)["a"].boxes) == 48


def test_expression_nested_too_deep():
    text = HEAD + "  y[t, d] = " + "-" * 300 + "x\n"
    check(text, 2, 3, "y[t, d]", "expression nested more than 200 deep",
          hint="several statements")


# -- rendering ------------------------------------------------------------------------


def test_rendering_with_tabs_keeps_the_caret_under_the_token():
    text = HEAD + "\ty[t, d] = xx\n"
    e = error_of(text)
    assert (e.loc.line, e.loc.col) == (2, 12)
    lines = str(e).split("\n")
    assert lines[1] == "   2 |  y[t, d] = xx"
    assert lines[2].index("^") == lines[1].index("xx")


def test_every_error_is_an_exception_subclass_with_message_and_hint():
    e = error_of(HEAD + "  y[t, d] = xx\n")
    assert isinstance(e, Exception)
    assert e.render() == str(e)
    assert str(e).endswith("  hint: did you mean `x`?")
