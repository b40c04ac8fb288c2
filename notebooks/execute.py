"""Execute notebooks in place and store their outputs (figures included), so they read on a code host.

  python notebooks/execute.py              # every notebook, at its small setting
  python notebooks/execute.py quickstart   # only these (names without .ipynb)

Runs each notebook headless with nbclient on the environment's python3 kernel, from the notebooks folder, exactly
as tests/test_notebooks.py does, then writes it back with its outputs; a notebook that fails is left unchanged
and the script exits 1 naming it.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

DIR = Path(__file__).resolve().parent


def execute(path: Path) -> float:
  """Run ``path`` and save it with its outputs; returns the seconds it took."""
  nb = nbformat.read(path, as_version=4)
  t0 = time.perf_counter()
  NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(DIR)}}).execute()
  for cell in nb.cells:  # keep diffs to what changed: no per-run timing metadata
    cell.get("metadata", {}).pop("execution", None)
  _, nb = nbformat.validator.normalize(nb)  # cell ids where the file had none
  nb = nbformat.from_dict(nb)
  tmp = path.with_suffix(".ipynb.tmp")
  nbformat.write(nb, tmp)
  os.replace(tmp, path)
  return time.perf_counter() - t0


def main(argv: list[str]) -> int:
  os.environ.pop("MPLBACKEND", None)  # the kernel's inline backend draws the figures into the outputs
  names = argv or sorted(p.stem for p in DIR.glob("*.ipynb"))
  failed = []
  for name in names:
    path = DIR / f"{name}.ipynb"
    try:
      print(f"{name}: {execute(path):.0f} s", flush=True)
    except Exception as e:  # noqa: BLE001 - report every failing notebook, then exit 1
      print(f"{name}: FAILED ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})", flush=True)
      failed.append(name)
  if failed:
    print("failed:", ", ".join(failed), file=sys.stderr)
  return 1 if failed else 0


if __name__ == "__main__":
  raise SystemExit(main(sys.argv[1:]))
