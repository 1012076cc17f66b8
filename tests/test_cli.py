"""The `anatomy` command line, run as a user would: exit codes, output and error reports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import anatomy
from anatomy.cli import main, parse_dims, split_target

ZOO = Path(anatomy.zoo_dir())


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "anatomy.cli", *map(str, args)],
                          check=False, capture_output=True, text=True, timeout=60, cwd=cwd)


@pytest.fixture(scope="module")
def zoo_check() -> subprocess.CompletedProcess:
    return run("check", ZOO)


def test_check_the_zoo_exits_0(zoo_check):
    assert zoo_check.returncode == 0, zoo_check.stderr
    assert "Traceback" not in zoo_check.stderr


def test_check_prints_one_line_per_anatomy(zoo_check):
    expected = [f"{p.name}:{d.name}" for p in sorted(ZOO.glob("*.anat"))
                for d in anatomy.load(p)]
    lines = zoo_check.stdout.splitlines()
    assert [line.split()[0] for line in lines] == expected
    # every anatomy defined in the zoo text appears (count `anatomy NAME(` headers by hand)
    headers = sum(line.startswith("anatomy ") for p in ZOO.glob("*.anat")
                  for line in p.read_text().splitlines())
    assert len(lines) == headers
    assert f"ok: {headers} anatomies checked" in zoo_check.stderr


def test_check_prints_shapes_and_param_counts(zoo_check):
    (mha,) = [line for line in zoo_check.stdout.splitlines() if line.startswith("mha.anat:")]
    # q, k, v: [d, h, n] each, output [h, n, d]; h * n = d: 4 * 512 * 512
    assert mha == "mha.anat:mha  (x[t, d=512]) -> y[t, d=512]  1,048,576 params"


def test_dims_change_printed_shapes():
    out = run("check", ZOO / "mha.anat", "--dims", "d=64")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "mha.anat:mha  (x[t, d=64]) -> y[t, d=64]  16,384 params"


def test_dims_apply_only_where_declared():
    """g is a dim of gqa but not of mha: both files check, each at its own dims."""
    out = run("check", ZOO / "mha.anat", ZOO / "gqa.anat", "--dims", "g=4,d=256")
    assert out.returncode == 0, out.stderr
    mha, gqa = out.stdout.splitlines()
    assert "d=256" in mha and "262,144 params" in mha  # 4 * 256^2
    # gqa at d=256, h=8, n=32, g=4: q [256,8,32], k and v [256,4,32], out [8,32,256]
    assert f"{(2 * 256 * 8 * 32 + 2 * 256 * 4 * 32):,} params" in gqa


@pytest.mark.parametrize("dims", ["d=zero", "d", "d=0", "d=-4", "=4", "d=4,,h=2", "d=1.5"])
def test_bad_dims_exit_2(dims):
    out = run("check", ZOO / "mha.anat", "--dims", dims)
    assert out.returncode == 2
    assert "bad --dims entry" in out.stderr
    assert "Traceback" not in out.stderr
    assert out.stdout == ""


def test_unknown_dims_exit_2():
    out = run("check", ZOO / "mha.anat", "--dims", "dd=64")
    assert out.returncode == 2
    assert "no anatomy checked declares a dim `dd`" in out.stderr
    assert "Traceback" not in out.stderr


def test_dims_that_break_an_anatomy_exit_2():
    out = run("check", ZOO / "mha.anat", "--dims", "h=5")
    assert out.returncode == 2
    assert "512 / 5 is not a whole number" in out.stderr
    assert "mha.anat:4:" in out.stderr and "Traceback" not in out.stderr


BAD = "anatomy a(x[t, d]) -> y[t, d]\n  dims d = 8\n  y[t, d] = relu(xx)\n"


@pytest.mark.parametrize("text, line, col, message", [
    (BAD, 3, 18, "unknown name `xx`"),
    ("anatomy a(x[t, d]) -> y[t, d]\n  y[t, d] = x $\n", 2, 15, "unexpected character"),
    ("anatomy a(x[t, d]) -> y[t, d]\n  y[t, d] = relu(x\n", 2, 19, "unexpected end of file"),
    ("anatomy a(x[t, d]) -> y[t, d]\n  dims d = 8, h = 3, p = d / h\n  y[t, d] = x\n", 2, 22,
     "not a whole number"),
    ('use "missing.anat"\n', 1, 1, "cannot find `missing.anat`"),
])
def test_bad_file_reports_place_and_caret(tmp_path, text, line, col, message):
    bad = tmp_path / "bad.anat"
    bad.write_text(text)
    out = run("check", bad)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    err = out.stderr.splitlines()
    assert err[0] == f"{bad}:{line}:{col}: error: " + err[0].split(": error: ", 1)[1]
    assert message in err[0]
    source = text.split("\n")[line - 1]
    assert err[1] == f"{line:>4} | {source}"
    assert err[2] == " " * (len(f"{line:>4} | ") + col - 1) + "^"


def test_good_and_bad_files_together_exit_2(tmp_path):
    bad = tmp_path / "bad.anat"
    bad.write_text(BAD)
    out = run("check", ZOO / "mha.anat", bad)
    assert out.returncode == 2 and "unknown name `xx`" in out.stderr


def test_relative_path_is_shown_as_given(tmp_path):
    (tmp_path / "bad.anat").write_text(BAD)
    out = run("check", "bad.anat", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.startswith("bad.anat:3:18: error: unknown name `xx`")


def test_nonexistent_file_exits_2(tmp_path):
    out = run("check", tmp_path / "nope.anat")
    assert out.returncode == 2
    assert "no such file" in out.stderr and "Traceback" not in out.stderr


def test_directory_without_anat_files_exits_2(tmp_path):
    out = run("check", tmp_path)
    assert out.returncode == 2 and "no .anat files" in out.stderr


def test_usage_errors_exit_2():
    out = run("check")
    assert out.returncode == 2 and "usage" in out.stderr
    out = run("frobnicate")
    assert out.returncode == 2


def test_print_one_anatomy_round_trips():
    out = run("print", f"{ZOO / 'mha.anat'}:mha")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("# Multi-head softmax attention")
    assert "anatomy mha(x[t, d]) -> y[t, d]\n" in out.stdout
    again = anatomy.load(out.stdout)["mha"]
    assert again.structure() == anatomy.load(ZOO / "mha.anat")["mha"].structure()


def test_print_whole_file_round_trips(tmp_path):
    out = run("print", ZOO / "linear_attention.anat")
    assert out.returncode == 0, out.stderr
    original = anatomy.load(ZOO / "linear_attention.anat")
    again = anatomy.load(out.stdout)
    assert [d.name for d in again] == [d.name for d in original]
    for d in original:
        assert again[d.name].structure() == d.structure()


def test_print_unknown_anatomy_exits_2():
    out = run("print", f"{ZOO / 'mha.anat'}:mah")
    assert out.returncode == 2
    assert "no anatomy named `mah`" in out.stderr and "did you mean `mha`?" in out.stderr


def test_print_nonexistent_file_exits_2(tmp_path):
    out = run("print", tmp_path / "nope.anat")
    assert out.returncode == 2 and "no such file" in out.stderr


# -- in process, for the small helpers -------------------------------------------------


def test_parse_dims():
    assert parse_dims("d=512, h=8") == {"d": 512, "h": 8}
    assert parse_dims(None) == {} and parse_dims("") == {}


def test_split_target(tmp_path):
    assert split_target("zoo/mha.anat:mha") == ("zoo/mha.anat", "mha")
    assert split_target("zoo/mha.anat") == ("zoo/mha.anat", None)
    odd = tmp_path / "a:b.anat"
    odd.write_text("")
    assert split_target(str(odd)) == (str(odd), None)  # an existing path wins


def test_main_returns_exit_codes(capsys, tmp_path):
    assert main(["check", str(ZOO / "gqa.anat")]) == 0
    assert capsys.readouterr().out.startswith("gqa.anat:gqa  ")
    bad = tmp_path / "bad.anat"
    bad.write_text(BAD)
    assert main(["check", str(bad)]) == 2
    assert f"{bad}:3:18: error:" in capsys.readouterr().err


def test_zoo_lists_one_line_per_file_and_prints_the_zoo_page():
    out = run("zoo")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == sorted(p.name for p in ZOO.glob("*.anat"))
    assert any(line.startswith("mla.anat: Multi-head latent attention") for line in lines)
    page = run("zoo", "--markdown")
    doc = Path(__file__).resolve().parent.parent / "docs" / "zoo.md"
    assert page.returncode == 0 and page.stdout == doc.read_text()
