"""Reliability (issue 20): checking is linear in program size, no command gives a traceback
on any input (files, options, databases, proof files), proofs cannot be forged, paths in
proofs are relative to the proof file, and the memory guard refuses what would not fit.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import anatomy
from anatomy import shapes as shapes_module
from anatomy.cli import main
from anatomy.errors import AnatError
from anatomy.program import load, zoo_dir
from anatomy.rewrite import Proof, Side
from anatomy.search.store import SearchStore
from anatomy.verify import prove, verify_proof

ZOO = zoo_dir()


def doubling_chain(depth: int) -> str:
    """a0 calls a1 twice, a1 calls a2 twice, ...: 2**depth calls when inlined."""
    parts = [f"anatomy a{i}(x[t, d]) -> y[t, d]\n  dims d = 4\n"
             f"  y[t, d] = a{i + 1}(x) + a{i + 1}(x)\n" for i in range(depth)]
    parts.append(f"anatomy a{depth}(x[t, d]) -> y[t, d]\n  dims d = 4\n"
                 "  param w[d] ~ ones\n  y[t, d] = x * w\n")
    return "\n".join(parts)


# -- linear checking ---------------------------------------------------------------------------
def test_a_30_level_doubling_chain_checks_each_anatomy_once(monkeypatch):
    calls = []
    check = shapes_module.check

    def counted(diagram, *args, **kwargs):
        calls.append(diagram.name)
        return check(diagram, *args, **kwargs)
    monkeypatch.setattr(shapes_module, "check", counted)
    program = load(doubling_chain(30))
    # each of the 31 anatomies is checked at top level, and as a callee once per dims
    assert len(calls) <= 2 * 31, len(calls)
    top = program["a0"].shapes
    assert top.param_count() == 4 * 2**30  # every call owns its parameters
    assert top.expanded_calls() == 2**31 - 2
    assert program["a0"].to_text().count("a1(x)") == 2


def test_what_would_expand_a_doubling_chain_is_refused_up_front(tmp_path):
    d = load(doubling_chain(30))["a0"]
    with pytest.raises(AnatError, match="composite calls when inlined"):
        anatomy.canonical(d)
    with pytest.raises(AnatError, match="boxes"):
        d.to_svg(depth=30)
    assert "<svg" in d.to_svg(depth=3)
    with pytest.raises(AnatError, match="2,147,483,647 modules"):
        anatomy.compile(d)


def test_compiling_nested_composites_recompiles_each_module_once(monkeypatch):
    from torch import fx
    count = []
    recompile = fx.GraphModule.recompile

    def counted(self):
        count.append(1)
        return recompile(self)
    monkeypatch.setattr(fx.GraphModule, "recompile", counted)
    anatomy.compile(load(doubling_chain(5))["a0"], form="parallel")
    modules = 2**6 - 1
    assert len(count) == modules, len(count)  # was ~2 * modules * depth


def test_compiling_a_doubling_chain_is_refused_before_building(monkeypatch, capsys, tmp_path):
    # every call owns its parameters, so a 16-level chain would be 131,071 modules: the count
    # is known in linear time and refused before the first module is built
    from anatomy.lowering.module import MAX_MODULES
    built = []
    monkeypatch.setattr(anatomy.lowering.module, "compile_diagram",
                        lambda *a, **k: built.append(1))
    d = load(doubling_chain(16))["a0"]
    with pytest.raises(AnatError, match="131,071 modules") as e:
        anatomy.compile(d)
    assert "ANATOMY_MAX_MODULES" in e.value.hint and not built
    with pytest.raises(AnatError, match="limit of 100"):
        anatomy.compile(d, max_modules=100)
    monkeypatch.setenv("ANATOMY_MAX_MODULES", "lots")
    with pytest.raises(AnatError, match="not a whole number"):
        anatomy.compile(d)
    monkeypatch.setenv("ANATOMY_MAX_MODULES", str(2**17))
    with pytest.raises(AnatError, match="needs about"):  # then the memory guard
        anatomy.compile(d, memory_limit="1G")
    monkeypatch.delenv("ANATOMY_MAX_MODULES")
    path = tmp_path / "chain.anat"
    path.write_text(doubling_chain(30))
    assert main(["compile", str(path), "--name", "a0"]) == 2
    assert f"limit of {MAX_MODULES:,}" in capsys.readouterr().err


# -- the memory guard --------------------------------------------------------------------------
def test_compile_refuses_huge_dims_before_allocating(capsys):
    for d in ("1000000000000", "50000"):
        assert main(["compile", str(ZOO / "mha.anat"), "--dims", f"d={d}",
                     "--memory-limit", "2G"]) == 2
        assert "needs about" in capsys.readouterr().err
    assert main(["compile", str(ZOO / "retnet.anat"), "--dims", "d=64", "--run",
                 "--seq", "100000000", "--memory-limit", "2G"]) == 2
    assert "running retnet at T=100000000" in capsys.readouterr().err


# -- options -----------------------------------------------------------------------------------
@pytest.mark.parametrize("option,value", [("--lr", "nan"), ("--lr", "inf"), ("--lr", "-1"),
                                          ("--lr", "0"), ("--workers", "-1")])
def test_bad_search_options_exit_2(option, value, capsys):
    with pytest.raises(SystemExit) as e:
        main(["search", str(ZOO / "search" / "attention.anat"), "--task", "mqar",
              option, value])
    assert e.value.code == 2
    assert option in capsys.readouterr().err


def test_a_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.anat"
    path.write_bytes(b"\xef\xbb\xbf" + (ZOO / "mha.anat").read_bytes())
    assert main(["check", str(path)]) == 0


def test_gallery_links_are_url_encoded(tmp_path):
    (tmp_path / "src").mkdir()
    shutil.copy(ZOO / "mha.anat", tmp_path / "src" / "a#b c.anat")
    assert main(["render", str(tmp_path / "src"), "-o", str(tmp_path / "out")]) == 0
    html = (tmp_path / "out" / "index.html").read_text()
    assert 'src="a%23b%20c.mha.svg"' in html and (tmp_path / "out" / "a#b c.mha.svg").exists()


def test_an_unwritable_output_is_an_error_not_a_traceback(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["render", str(ZOO / "mha.anat"), "-o", str(blocker / "x.svg")]) == 2
    assert "cannot" in capsys.readouterr().err


# -- search databases --------------------------------------------------------------------------
def corruptions(good: bytes) -> dict[str, bytes]:
    flipped = bytearray(good)
    flipped[3] ^= 0xFF  # the header
    return {"zero-length": b"", "text": b"not a database\n", "truncated": good[:1000],
            "header flipped": bytes(flipped), "half": good[:len(good) // 2]}


def test_a_corrupt_database_is_refused_with_its_path_and_left_as_it_is(tmp_path):
    path = tmp_path / "good.db"
    store = SearchStore(path, {"a": 1})
    store.add_variant("k", "v", ["x"], ["v"])
    store.add_trials("k", range(50))
    store.close()
    good = path.read_bytes()
    for kind, data in corruptions(good).items():
        bad = tmp_path / f"{kind}.db"
        bad.write_bytes(data)
        with pytest.raises(AnatError, match="not a usable search database") as e:
            SearchStore(bad, {"a": 1})
        assert str(bad) in e.value.message and "--out" in e.value.hint, kind
        assert bad.read_bytes() == data, kind  # nothing written over it
    other = tmp_path / "other.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE trials (x)")
    db.commit()
    db.close()
    with pytest.raises(AnatError, match="lacks columns"):
        SearchStore(other, {"a": 1})


# -- proofs ------------------------------------------------------------------------------------
def make_proof(folder: Path) -> Path:
    """SSD's recurrence = masked linear attention, proved from copies of the zoo files in
    `folder` and saved there with relative paths."""
    for name in ("forms.anat", "cores.anat"):
        shutil.copy(ZOO / name, folder / name)
    sides = [Side(load(folder / f)[n], str(folder / f), n)
             for f, n in (("forms.anat", "ssm_core"), ("cores.anat", "ssd_core"))]
    result = prove(*sides)
    assert isinstance(result, Proof)
    result.save(folder / "proof.json")
    return folder / "proof.json"


@pytest.fixture(scope="module")
def proof_data(tmp_path_factory):
    path = make_proof(tmp_path_factory.mktemp("proof"))
    assert verify_proof(path).ok
    return path, json.loads(path.read_text())


FORGERIES = {
    "step text": lambda p: p["left_steps"][0].__setitem__("text", p["left_steps"][0]["text"]
                                                          + "\n"),
    "statement": lambda p: p["left_steps"][0].__setitem__("statement", "a = b"),
    "kind": lambda p: p["left_steps"][0].__setitem__("kind", "approximate"),
    "meet": lambda p: p.__setitem__("meet", "0" * 24),
    "left text": lambda p: p["left"].__setitem__("text", "anatomy x() -> y[t]\n"),
    "right text": lambda p: p["right"].__setitem__("text", p["right"]["text"] + " "),
    "approximate": lambda p: p.__setitem__("approximate", True),
    "a step dropped": lambda p: p["left_steps"].pop(),
}


@pytest.mark.parametrize("field", FORGERIES)
def test_a_forged_proof_is_not_verified(proof_data, field):
    path, data = proof_data
    forged = json.loads(json.dumps(data))
    FORGERIES[field](forged)
    target = path.parent / f"forged-{field.replace(' ', '_')}.json"
    target.write_text(json.dumps(forged))
    try:
        assert not verify_proof(target).ok
    except AnatError:
        pass


def test_proof_paths_are_relative_to_the_proof(tmp_path, monkeypatch):
    first = tmp_path / "first"
    first.mkdir()
    path = make_proof(first)
    data = json.loads(path.read_text())
    assert data["left"]["file"] == "forms.anat"
    moved = tmp_path / "elsewhere" / "deeper"
    shutil.copytree(first, moved)
    monkeypatch.chdir(tmp_path)
    assert verify_proof(moved / "proof.json").ok
    (moved / "cores.anat").write_text((moved / "cores.anat").read_text() + "\n# edited\n")
    result = verify_proof(moved / "proof.json")
    assert not result.ok and "changed since" in result.render()
    (moved / "cores.anat").unlink()
    with pytest.raises(AnatError, match="missing"):
        verify_proof(moved / "proof.json")


def test_an_unpinned_proof_needs_allow_unpinned(proof_data, capsys):
    path, data = proof_data
    unpinned = json.loads(json.dumps(data))
    unpinned["left"]["sha256"] = None
    target = path.parent / "unpinned.json"
    target.write_text(json.dumps(unpinned))
    assert main(["verify-proof", str(target)]) == 2
    assert "--allow-unpinned" in capsys.readouterr().err
    assert main(["verify-proof", str(target), "--allow-unpinned"]) == 0
    del unpinned["left"]["sha256"]
    target.write_text(json.dumps(unpinned))
    assert main(["verify-proof", str(target)]) == 2


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                    lambda kids: st.lists(kids, max_size=3)
                    | st.dictionaries(st.text(max_size=5), kids, max_size=3), max_leaves=8)


def paths(value, prefix=()):
    """Every place in a JSON value."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from paths(v, prefix + (i,))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_proof_files_are_errors_or_refusals(proof_data, data):
    """Replace, delete or nest any place of a valid proof: verify-proof exits 1 or 2 (never
    a traceback) and never says verified unless the proof is unchanged."""
    path, original = proof_data
    proof = json.loads(json.dumps(original))
    where = data.draw(st.sampled_from(list(paths(proof))[1:]))
    parent = proof
    for key in where[:-1]:
        parent = parent[key]
    action = data.draw(st.sampled_from(["replace", "delete", "nest"]))
    if action == "replace":
        parent[where[-1]] = data.draw(JSON)
    elif action == "delete":
        del parent[where[-1]]
    else:
        parent[where[-1]] = [[[[parent[where[-1]]]]]]
    target = path.parent / "fuzzed.json"
    target.write_text(json.dumps(proof))
    code = main(["verify-proof", str(target)])
    assert code in (0, 1, 2)
    if code == 0:
        assert proof == original


def test_deeply_nested_and_non_utf8_proofs_are_errors(tmp_path, capsys):
    target = tmp_path / "deep.json"
    target.write_text("[" * 100_000 + "]" * 100_000)
    assert main(["verify-proof", str(target)]) == 2
    target.write_bytes(b"\xff\xfe{}")
    assert main(["verify-proof", str(target)]) == 2
    assert main(["verify-proof", str(tmp_path)]) == 2


OPTIONS = {
    "check": ["--dims"],
    "print": [],
    "render": ["--depth", "--format", "--dims"],
    "compile": ["--dims", "--form", "--seq", "--memory-limit", "--name"],
    "verify-proof": [],
    "enumerate": ["--dims", "--pick", "--workers"],
}
VALUES = st.sampled_from(["", "0", "-1", "nan", "inf", "1e400", "d=0", "d=-1", "d=10**12",
                          "d=1000000000000", "x", "=", ",", "\x00", "\ufeff", "d=8,d=8",
                          "dot", "svg", "parallel", "1", "99999999999999999999", "1K"])
TARGETS = st.sampled_from([str(ZOO / "mha.anat"), str(ZOO / "cores.anat") + ":ssd_core",
                           str(ZOO / "search" / "attention.anat"), "/nonexistent.anat",
                           str(ZOO), "", ":", "x:y:z", "/dev/null"])


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_cli_options_exit_0_1_or_2(data, tmp_path_factory, capsys):
    command = data.draw(st.sampled_from(sorted(OPTIONS)))
    argv = [command, data.draw(TARGETS)]
    for option in data.draw(st.lists(st.sampled_from(OPTIONS[command] or ["--help"]),
                                     max_size=3, unique=True)):
        argv += [option] if option == "--help" else [option, data.draw(VALUES)]
    if command == "compile" and "--memory-limit" not in argv:
        argv += ["--memory-limit", "1G"]
    if command == "render":
        argv += ["-o", str(tmp_path_factory.mktemp("render") / "out")]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse: a usage error (2) or --help (0)
        code = e.code
    assert code in (0, 1, 2), argv
    capsys.readouterr()
