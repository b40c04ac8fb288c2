"""Every notebook runs headless at its small setting (nbclient, the environment's own python3 kernel; nothing is
installed into the user's Jupyter) and follows the house layout: a setup cell first, a ``parameters``
cell with ``FULL_SIZE = False``, the accelerator printed, jaxeff imported (no functions or classes defined in the
notebook), at least one figure, and a ``result``/``results`` value at the end."""

import ast
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(DIR.glob("*.ipynb"))
PAPERS = {  # notebook -> paper
  "proxyattn": "ProxyAttn",
  "kvcache": "CommonKV",
  "eviction": "Judge Q",
  "camera": "CAMERA",
  "seersc": "SeerSC",
  "scaling": "scaling laws for code",
  "codetrans": "SA-augmented code translation",
  "tcbench": "TC-Bench",
  "cot_robustness": "CoT robustness bounds",
  "grads": "GradS",
}


def test_one_notebook_per_paper_plus_quickstart():
  names = {p.stem for p in NOTEBOOKS}
  assert names >= set(PAPERS) | {"quickstart"}, sorted(set(PAPERS) - names)


def _code(nb):
  return [c for c in nb.cells if c.cell_type == "code"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_layout(path):
  nb = nbformat.read(path, as_version=4)
  code = _code(nb)
  first = code[0].source
  assert 'find_spec("jaxeff") is None' in first and "JAXEFF_SOURCE = " in first and "pip" in first, (
    "first code cell: install jaxeff from a user-set source only when it is not installed"
  )
  assert "jax[tpu]" in first or ",tpu" in first, "the setup picks the jax extra for the accelerator"
  params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
  assert len(params) == 1 and "FULL_SIZE = False" in params[0].source
  src = "\n".join(c.source for c in code)
  assert "jax.default_backend()" in src, "the notebook prints the accelerator it runs on"
  assert "from jaxeff" in src or "import jaxeff" in src
  for c in code:
    tree = ast.parse(c.source)
    defs = [n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert not defs, f"library logic belongs in jaxeff, not the notebook: {defs}"
  # committed with their outputs (python notebooks/execute.py), so they read on a code host: every code cell
  # ran, none failed, and the figures are there
  assert all(c.get("execution_count") for c in code), "re-run python notebooks/execute.py: a cell has not run"
  errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
  assert not errors, f"a stored output is an error: {errors[0].get('ename')}"
  assert any("image/png" in o.get("data", {}) for c in code for o in c.get("outputs", [])), "no stored figure"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, monkeypatch):
  monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend draws the figures
  nb = nbformat.read(path, as_version=4)
  nb.cells.append(nbformat.v4.new_code_cell('assert "result" in globals() or "results" in globals()'))
  NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(DIR)}}).execute()
  images = [o for c in _code(nb) for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
  assert images, "the notebook shows at least one figure"


@pytest.mark.parametrize(
  "source, accel, want",
  [
    ("jaxeff", None, "jaxeff[notebooks]"),
    ("jaxeff", "tpu", "jaxeff[notebooks,tpu]"),
    ("jaxeff", "gpu", "jaxeff[notebooks,cuda]"),
    ("git+https://example.org/jaxeff", None, "jaxeff[notebooks] @ git+https://example.org/jaxeff"),
    ("{root}", "gpu", "{root}[notebooks,cuda]"),
  ],
)
def test_setup_cell_installs_only_when_missing_from_the_source_with_the_accelerators_extra(
  monkeypatch, source, accel, want
):
  import importlib.util
  import shutil
  import subprocess

  root = str(DIR.parent)
  cell = _code(nbformat.read(NOTEBOOKS[0], as_version=4))[0].source
  cell = cell.replace('JAXEFF_SOURCE = "jaxeff"', f"JAXEFF_SOURCE = {source.format(root=root)!r}")
  calls = []
  monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd))
  monkeypatch.setattr(shutil, "which", lambda name, *a, **k: "/usr/bin/nvidia-smi" if accel == "gpu" else None)
  for var in ("COLAB_TPU_ADDR", "TPU_ACCELERATOR_TYPE"):
    monkeypatch.delenv(var, raising=False)
  if accel == "tpu":
    monkeypatch.setenv("TPU_ACCELERATOR_TYPE", "v5litepod-8")
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "jaxeff" else real(name, *a))
  exec(cell, {})
  assert calls and calls[0][-1] == want.format(root=root)
  calls.clear()
  monkeypatch.setattr(importlib.util, "find_spec", real)  # jaxeff installed: nothing is installed
  exec(cell, {})
  assert calls == []
