"""The differential fuzzer over execution forms: every form a compiled module offers
(chunked, auto, step token by token, step over a prefill and random chunks) either is
refused with AnatError when it is compiled, or agrees with the parallel form to 1e-9
relative in float64, gradients included for chunked vs parallel.

Programs come from tests/forms_fuzz.py. The default run draws 300 of them;
`pytest -m fuzz_full tests/test_forms_fuzz.py` draws 10,000. `python tests/forms_fuzz.py N`
prints the counts (programs, forms compiled, refused, agreed, the worst error).
"""

from __future__ import annotations

import pytest
from forms_fuzz import check_forms, draw_program
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

TOLERANCE = 1e-9
COMMON = {"deadline": None, "database": None, "derandomize": True,
          "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}


def agree_or_refuse(data) -> None:
    text = draw_program(data.draw, st)
    seq = data.draw(st.integers(1, 12), label="T")
    chunk = data.draw(st.sampled_from([1, 2, 3, 4, 64]), label="chunk")
    pieces = data.draw(st.lists(st.integers(1, 5), min_size=1, max_size=4), label="pieces")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    outcome = check_forms(text, seq, seed, chunk, pieces)
    bad = {form: err for form, err in outcome.error.items() if not err <= TOLERANCE}
    assert not bad, f"forms disagree with parallel (relative errors {bad}):\n{text}"


@settings(max_examples=300, **COMMON)
@given(st.data())
def test_every_form_agrees_with_parallel_or_is_refused(data):
    agree_or_refuse(data)


@pytest.mark.fuzz_full
@settings(max_examples=10_000, **COMMON)
@given(st.data())
def test_every_form_agrees_with_parallel_or_is_refused_full(data):
    agree_or_refuse(data)
