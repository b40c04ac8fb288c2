"""Notebooks are jupytext percent-format Python: each runs top to bottom at its small setting."""

import runpy
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.py"))


def test_there_are_notebooks():
  assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, monkeypatch):
  monkeypatch.setenv("MPLBACKEND", "Agg")
  monkeypatch.chdir(path.parent)
  ns = runpy.run_path(str(path), run_name="__main__")
  assert "result" in ns or "results" in ns
