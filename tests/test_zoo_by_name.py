"""The zoo by name (`anatomy.compile("ssd")`, `anatomy.load("ssd")`, `anatomy check ssd`,
`anatomy zoo --paths`) and the command line's habits: `python -m anatomy`, `--version`, and
`-` for standard input in check, print, compile and render.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import anatomy
from anatomy.cli import main, read_stdin
from anatomy.program import resolve_zoo, zoo_names

ZOO = Path(anatomy.zoo_dir())


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "anatomy", *args], check=False,
                          capture_output=True, text=True, cwd=cwd, timeout=300)


def test_zoo_names_mean_their_files_and_anatomies(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no clone here: zoo/ssd.anat is the installed zoo's
    assert resolve_zoo("ssd") == (ZOO / "ssd.anat", "ssd")
    assert resolve_zoo("ssd_core") == (ZOO / "cores.anat", "ssd_core")
    assert resolve_zoo("cores") == (ZOO / "cores.anat", None)
    assert resolve_zoo("zoo/ssd.anat") == (ZOO / "ssd.anat", None)
    assert resolve_zoo("zoo/search/attention.anat") == (ZOO / "search" / "attention.anat", None)
    assert resolve_zoo("zoo") == (ZOO, None)
    assert resolve_zoo("nothing") is None and resolve_zoo("a.anat") is None
    # every anatomy defined in the zoo's files has a name (count headers by hand)
    headers = {line.split("(")[0][len("anatomy "):] for p in ZOO.glob("*.anat")
               for line in p.read_text().splitlines() if line.startswith("anatomy ")}
    assert headers <= set(zoo_names())
    assert [d.name for d in anatomy.load("ssd", d=64)] == ["ssd"]
    assert anatomy.load("ssd_core").own == anatomy.load(ZOO / "cores.anat").own
    assert anatomy.compile("ssd", d=32, h=4, n=8)(torch.randn(1, 5, 32)).shape == (1, 5, 32)
    assert anatomy.compile("mla", d=32, h=4, n=8, r=4, l=16, m=16).diagram.name == "mla"
    assert anatomy.compile("mla_absorbed", d=32, h=4, n=8, r=4, l=16, m=16) \
        .diagram.name == "mla_absorbed"
    with pytest.raises(anatomy.AnatError, match="no file and no zoo anatomy named `ssdd`") \
            as error:
        anatomy.load("ssdd")
    assert "did you mean `ssd`?" in error.value.render()


def test_a_local_file_wins_over_the_zoo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("ssd.anat").write_text("anatomy mine(x[t, d]) -> y[t, d]\n  y[t, d] = exp(x)\n")
    assert anatomy.load("ssd.anat").own == ("mine",)
    assert anatomy.load("ssd").own == ("ssd",)  # a bare name is the zoo's


def test_cli_zoo_names_version_and_module_entry_point(tmp_path):
    out = run("check", "ssd", "--dims", "d=256", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ssd.anat:ssd  (x[t, d=256]) -> y[t, d=256]")
    out = run("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"anatomy {anatomy.__version__}"
    out = run("zoo", "--paths", cwd=tmp_path)
    rows = dict(line.split("\t") for line in out.stdout.splitlines())
    assert rows["ssd_core"] == str(ZOO / "cores.anat") and rows["gqa"] == str(ZOO / "gqa.anat")
    out = run("check", "ssdd", cwd=tmp_path)
    assert out.returncode == 2 and "did you mean `ssd`?" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.fixture
def stdin(monkeypatch):
    def feed(text: str):
        read_stdin.cache_clear()
        monkeypatch.setattr(sys, "stdin", __import__("io").StringIO(text))
    yield feed
    read_stdin.cache_clear()


def test_dash_reads_the_program_from_stdin(stdin, capsys, tmp_path):
    gqa = (ZOO / "gqa.anat").read_text()
    stdin(gqa)
    assert main(["check", "-", "--dims", "d=64"]) == 0
    assert capsys.readouterr().out.startswith("-:gqa  (x[t, d=64]) -> y[t, d=64]")
    stdin(gqa)
    assert main(["print", "-"]) == 0
    assert "anatomy gqa(x[t, d]) -> y[t, d]" in capsys.readouterr().out
    stdin(gqa)
    assert main(["compile", "-", "--dims", "d=32,h=4,g=2", "--run"]) == 0
    assert "-:gqa  compiled in" in capsys.readouterr().out
    stdin(gqa)
    assert main(["render", "-", "--format", "dot"]) == 0
    assert capsys.readouterr().out.startswith("digraph")
    stdin("anatomy f(x[t]) -> y[t]\n  y[t] = sofmax(x, t)\n")
    assert main(["check", "-"]) == 2
    assert "<stdin>:2:10: error: unknown box `sofmax`" in capsys.readouterr().err
