"""Templates, their instantiation and the enumeration of the default search space.

Expected counts are worked out by hand from the library in zoo/search/attention.anat:
5 KV-sharing x 3 feature maps x 5 similarities x 4 masks x 5 normalisers = 1,500 fillings.
At h = 4, gqa4 (four groups) is MHA (GQA with G = H), so each of the 300 gqa4 fillings falls
into the class of its MHA twin: 1,200 classes. At h = 2, four groups do not divide two heads
(the checker refuses the 300 gqa4 fillings) and gqa2 is MHA: 1,200 typed, 900 classes.
"""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

import anatomy
from anatomy.causality import acausal_reason
from anatomy.errors import AnatError
from anatomy.rewrite import canonical
from anatomy.search import SearchSpace, instantiate, slots_of
from anatomy.search.model import block_diagram

ATTENTION = anatomy.zoo_dir() / "search" / "attention.anat"


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return SearchSpace.load(ATTENTION)


@pytest.fixture(scope="module")
def default_enumeration(space):
    return space.enumerate(workers=1)


def test_default_space_counts(space, default_enumeration):
    assert space.slots == ["kv_sharing", "feature_map", "similarity", "mask", "normaliser"]
    assert space.size == 1500
    e = default_enumeration
    assert len(e.fillings) == 1500 and not e.rejected
    classes = e.classes
    assert len(classes) == 1200
    merged = [c for c in classes.values() if len(c.members) > 1]
    assert len(merged) == 300
    for c in merged:  # every merged class is exactly {mha filling, its gqa4 twin}
        a, b = (dict(m.choice) for m in c.members)
        assert {a["kv_sharing"], b["kv_sharing"]} == {"mha", "gqa4"}
        assert {k: v for k, v in a.items() if k != "kv_sharing"} == \
            {k: v for k, v in b.items() if k != "kv_sharing"}


def test_dims_change_what_collapses_and_what_type_checks():
    e = SearchSpace.load(ATTENTION, dims={"h": 2}).enumerate(workers=2)
    assert len(e.rejected) == 300
    assert {dict(f.choice)["kv_sharing"] for f in e.rejected} == {"gqa4"}
    assert "cannot be split into 4 groups" in e.rejected[0].error
    assert len(e.classes) == 900
    pairs = {frozenset(dict(m.choice)["kv_sharing"] for m in c.members)
             for c in e.classes.values() if len(c.members) > 1}
    assert pairs == {frozenset({"mha", "gqa2"})}


def test_filler_dims_given_at_load_reach_the_fillers():
    # --dims g=4 makes gqa2 a four-group GQA, which at h = 4 is MHA
    e = SearchSpace.load(ATTENTION, dims={"g": 4},
                         restrict={"kv_sharing": ["mha", "gqa2"], "feature_map": ["identity"],
                                   "similarity": ["dot"], "mask": ["causal_mask"]}).enumerate()
    assert len(e.fillings) == 10 and len(e.classes) == 5


def test_tree_keys_equal_canonical_of_the_instantiated_template(space, default_enumeration):
    """The enumeration's staged inlining gives the keys canonical() gives each filling."""
    sample = random.Random(3).sample(default_enumeration.fillings, 25)
    for f in sample:
        assert f.key == canonical(space.instantiate(f.choice)), f.name
    direct = space.enumerate(choices=[f.choice for f in sample])
    assert [f.key for f in direct.fillings] == [f.key for f in sample]


def test_parallel_enumeration_equals_serial(space, default_enumeration):
    two = space.enumerate(workers=2)
    assert [(f.choice, f.key) for f in two.fillings] == \
        [(f.choice, f.key) for f in default_enumeration.fillings]


def test_instantiate_replaces_slot_boxes_by_calls(space):
    t = space.template
    d = instantiate(t, {"kv_sharing": "mha", "feature_map": "relu_features",
                        "similarity": "dot", "mask": "causal_mask",
                        "normaliser": "softmax_normaliser"})
    assert slots_of(t) == space.slots and not slots_of(d)
    calls = [b.attr("anatomy") for b in d.boxes if b.op == "call"]
    assert calls == ["mha", "relu_features", "relu_features", "dot", "causal_mask",
                     "softmax_normaliser"]
    assert d.shapes.size("n") == 16


def test_instantiate_errors(space):
    t = space.template
    with pytest.raises(AnatError, match="no filler chosen for slot `mask`"):
        instantiate(t, {"kv_sharing": "mha", "feature_map": "identity", "similarity": "dot",
                        "normaliser": "no_normaliser"})
    with pytest.raises(AnatError, match="dot does not fill slot `mask`"):
        instantiate(t, {"kv_sharing": "mha", "feature_map": "identity", "similarity": "dot",
                        "mask": "dot", "normaliser": "no_normaliser"})


def test_parse_choice(space):
    want = (("kv_sharing", "tied"), ("feature_map", "identity"), ("similarity", "cosine"),
            ("mask", "fixed_decay"), ("normaliser", "relu_normaliser"))
    assert space.parse_choice("tied identity cosine fixed_decay relu_normaliser") == want
    assert space.parse_choice("mask=fixed_decay normaliser=relu_normaliser kv_sharing=tied "
                              "similarity=cosine feature_map=identity") == want
    with pytest.raises(AnatError, match="does not fill slot `mask`"):
        space.parse_choice("tied identity cosine softmax_normaliser relu_normaliser")
    with pytest.raises(AnatError, match="cannot read"):
        space.parse_choice("tied identity")


def test_a_file_without_templates_is_refused():
    with pytest.raises(AnatError, match="has no template"):
        SearchSpace.load(anatomy.zoo_dir() / "mha.anat")


def test_the_block_calls_the_variant_and_masks_decide_causality(space):
    causal = space.instantiate(space.parse_choice("mha identity dot selective_decay "
                                                  "no_normaliser"))
    block = block_diagram(causal)
    assert [b.attr("anatomy") for b in block.boxes if b.op == "call"] == ["variant"]
    assert acausal_reason(causal, causal.shapes) is None
    both_ways = space.instantiate(space.parse_choice("mha identity dot quasiseparable "
                                                     "no_normaliser"))
    box, why = acausal_reason(both_ways, both_ways.shapes)  # its mask lets s > t through
    assert box.op == "contract" and "sums over s with no mask bounding s" in why


def run(*args):
    return subprocess.run([sys.executable, "-m", "anatomy.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=120, check=False)


def test_enumerate_cli():
    out = run("enumerate", ATTENTION, "--pick", "kv_sharing=mha,gqa4", "--pick",
              "feature_map=identity", "--pick", "similarity=dot", "--pick", "mask=causal_mask")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("template attention: 10 fillings")
    assert "mha+identity+dot+causal_mask+softmax_normaliser  = gqa4+identity+dot+" in out.stdout
    assert lines[-1].startswith("10 fillings, 10 type-correct (0 refused by the checker), "
                                "5 canonical classes: 10 fillings collapsed into 5 classes")


def test_enumerate_cli_errors_exit_2(tmp_path):
    for args in (["--pick", "mask=causl"], ["--pick", "nomask"], ["--dims", "h=x"]):
        out = run("enumerate", ATTENTION, *args)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    bad = tmp_path / "bad.anat"
    bad.write_text("slot s(x[t, d]) -> y[t, d]\nanatomy t(x[t, d]) -> y[t, d]\n"
                   "  dims d = 4\n  y[t, d] = slot s(x) + undefined\n")
    out = run("enumerate", bad)
    assert out.returncode == 2 and f"{bad.name}:4:" in out.stderr
