"""Guards of the search: the sum normaliser's denominator is safe where a row of scores is
all zeros (relu features at initialisation: 0 / 0 without the guard), and a model that is
NaN or infinite at initialisation is reported before training (`nonfinite_at_init`)."""

from __future__ import annotations

import torch

import anatomy
from anatomy.search.space import SearchSpace
from anatomy.search.tasks import TaskSettings
from anatomy.search.train import TrialSpec, nonfinite_at_init, run_trial

ATTENTION = anatomy.zoo_dir() / "search" / "attention.anat"
RELU_SUM = "mha relu_features scaled_dot causal_mask sum_normaliser"
GUARD = "normalise(m * score, s, eps=0.000001)"


def relu_sum_mixer(text: str, tmp_path):
    from anatomy.lowering import compile as compile_diagram
    path = tmp_path / "attention.anat"
    path.write_text(text)
    space = SearchSpace.load(path, dims={"d": 16, "h": 2})
    variant = space.instantiate(space.parse_choice(RELU_SUM))
    torch.manual_seed(0)
    mixer = compile_diagram(variant, **dict(variant.shapes.dims))
    with torch.no_grad():
        dict(mixer.named_parameters())["q.w_q"].zero_()  # relu(q) = 0: every score is 0
    return mixer, path


def test_the_sum_normaliser_divides_safely(tmp_path):
    text = ATTENTION.read_text()
    assert GUARD in text
    x = torch.randn(1, 8, 16)
    guarded, _ = relu_sum_mixer(text, tmp_path)
    assert torch.equal(guarded(x), torch.zeros(1, 8, 16))  # nothing to attend to: 0
    bare, _ = relu_sum_mixer(text.replace(GUARD, "normalise(m * score, s)"), tmp_path)
    assert torch.isnan(bare(x)).all()  # 0 / 0


def spec(path, choice: str, seed: int = 0) -> TrialSpec:
    task = TaskSettings("mqar", seq_len=16, batch=8, vocab=16, pairs=2, eval_sequences=16)
    space = SearchSpace.load(path, dims={"d": 16, "h": 2})
    return TrialSpec(trial=0, variant="k", template_file=str(path), template_text=path.read_text(),
                     template="attention", choice=space.parse_choice(choice), seed=seed,
                     dims=(("d", 16), ("h", 2)), task=task, budget=256, layers=1)


def test_non_finite_at_initialisation_is_reported(tmp_path):
    """A similarity that overflows (exp(exp(exp(.))) of O(1) scores) is infinite at
    initialisation: the check names the logits, and a trial started anyway ends at step 0
    with that reason. The guarded relu + sum variant passes at every seed tried."""
    text = ATTENTION.read_text() + (
        "\nanatomy overflowing(q[t, h, n], k[s, h, n]) -> score[h, t, s] fills similarity\n"
        "  score[h, t, s] = exp(exp(exp(q * k + 9)))\n")
    path = tmp_path / "attention.anat"
    path.write_text(text)
    bad = spec(path, "mha identity overflowing causal_mask softmax_normaliser")
    assert "not finite" in nonfinite_at_init(bad)
    result = run_trial(bad)  # a trial that starts anyway stops at its first step
    assert result.status == "diverged" and result.steps == 0
    assert result.error.startswith("non-finite at initialisation")
    for seed in range(3):
        assert nonfinite_at_init(spec(path, RELU_SUM, seed)) is None
