"""Packaging: every file the package reads at run time ships in its wheel, the search's
plots are an extra (without matplotlib they are skipped with a note), and every example of
the README runs against the installed package from a directory that is not a clone (the
slow test builds and installs a wheel).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest
import tomllib

from anatomy.search import plots

REPO = Path(__file__).resolve().parent.parent
# read at run time: kernel sources built on first use, the grammar, the zoo's diagrams
RUNTIME_DATA = ("*.cpp", "*.h", "*.lark", "*.anat")


def test_every_file_read_at_run_time_is_package_data():
    """A source the C++ kernels build from, or a zoo file, left out of package-data is missing
    from a wheel install only (an editable install reads the tree): the kernel then falls
    back with a warning, or the zoo entry is gone."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    missing = []
    for package, folder in config["package-dir"].items():
        globs = config["package-data"].get(package, [])
        for path in sorted((REPO / folder).rglob("*")):
            relative = path.relative_to(REPO / folder)
            if (len(relative.parts) > 1 and ".".join((package, *relative.parts[:-1]))
                    in config["package-dir"]):
                continue  # a subpackage's file: checked under its own entry
            if any(fnmatch(path.name, g) for g in RUNTIME_DATA) and not any(
                    fnmatch(relative.as_posix(), g) for g in globs):
                missing.append(f"{package}: {relative}")
    assert not missing, f"not in [tool.setuptools.package-data]: {missing}"


def test_plots_are_skipped_with_a_note_without_matplotlib(tmp_path, monkeypatch, capsys):
    plots._pyplot.cache_clear()
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails
    try:
        plots.plot_curves([], [], tmp_path / "loss.png", "title")
        plots.plot_metric([], [], "accuracy", tmp_path / "metric.png", "title")
    finally:
        plots._pyplot.cache_clear()
    assert not list(tmp_path.iterdir())
    err = capsys.readouterr().err
    assert err.count("plots skipped: matplotlib is not installed") == 1
    assert "anatomy[plots]" in err


# a README command needs a clone (scripts/), or runs for minutes: not run here, and why
NOT_RUN = {
    "bash scripts/": "needs a clone",
    "anatomy search": "trains 3 variants x 3 seeds on 500k tokens each (minutes); "
                      "tests/test_search_run.py runs small searches",
}
ANATOMY = re.compile(r"^(\.venv/bin/)?anatomy ")


def readme_examples() -> tuple[list[str], list[tuple[list[str], int]]]:
    """The README's Python blocks, and its `anatomy` commands with the exit status each
    expects (1 where its comment says so)."""
    python, commands = [], []
    text = (REPO / "README.md").read_text()
    for lang, body in re.findall(r"```(\w*)\n(.*?)```", text, re.DOTALL):
        if lang == "python":
            python.append(body)
            continue
        if lang not in ("console", "bash"):
            continue
        lines = body.replace("\\\n", " ").splitlines()
        if lang == "console":
            lines = [ln[2:] for ln in lines if ln.startswith("$ ")]
        for line in lines:
            command, _, comment = line.partition("  #")
            if not ANATOMY.match(command) or any(k in command for k in NOT_RUN):
                continue
            status = 1 if "exit status 1" in comment else 0
            commands.append((shlex.split(ANATOMY.sub("", command)), status))
    return python, commands


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The package built as a wheel from a copy of this tree and installed into a folder
    of its own (its dependencies are this environment's)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "site", "runs", "*.egg-info", "__pycache__",
        ".pytest_cache", ".hypothesis", ".ruff_cache", "results", "img"))
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(root),
                          str(source)], check=True, capture_output=True)
    (wheel,) = root.glob("anatomy-*.whl")
    subprocess.run(pip + ["install", "--no-deps", "--target", str(root / "site"), str(wheel)],
                   check=True, capture_output=True)
    return root / "site"


@pytest.mark.slow
def test_readme_examples_run_from_the_installed_wheel_outside_a_clone(installed, tmp_path):
    python, commands = readme_examples()
    assert len(python) >= 3 and len(commands) >= 7  # the parser found the examples
    env = {**os.environ, "PYTHONPATH": str(installed)}
    script = tmp_path / "readme.py"
    script.write_text("import anatomy\nimport torch\n"
                      f"assert anatomy.__file__.startswith({str(installed)!r}), anatomy.__file__\n"
                      + "\n".join(python))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "ssd(x[t, d=256]) -> y[t, d=256]" in done.stdout  # print(mixer)
    for args, status in commands:
        done = subprocess.run([sys.executable, "-m", "anatomy", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, check=False)
        assert done.returncode == status, (args, done.stderr[-2000:])
        assert "Traceback" not in done.stderr, args
    assert (tmp_path / "ssd.svg").exists() and (tmp_path / "site" / "index.html").exists()
