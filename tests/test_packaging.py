"""Packaging: the search's plots are an extra (without matplotlib they are skipped with a
note), and every example of the README runs against the installed package from a
directory that is not a clone (the slow test builds and installs a wheel).
"""

from __future__ import annotations

import sys

from anatomy.search import plots


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
