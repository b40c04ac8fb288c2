"""The package's declared dependencies are exactly what its code imports; the metadata is publishable."""

import ast
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DIST_OF_MODULE = {"ml_dtypes": "ml-dtypes", "orbax": "orbax-checkpoint", "yaml": "pyyaml"}
FIRST_PARTY = {"jaxeff", "kernels_pallas"}


def _dist(req: str) -> str:
  return re.split(r"[<>=!\[; ]", req, maxsplit=1)[0].lower()


def _imports() -> dict[str, list[str]]:
  """Third-party top-level modules imported anywhere in the package -> files importing them."""
  found: dict[str, list[str]] = {}
  for path in [*(ROOT / "jaxeff").rglob("*.py"), *(ROOT / "kernels_pallas").rglob("*.py")]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        names = [node.module]
      else:
        continue
      for name in names:
        top = name.split(".")[0]
        if top not in sys.stdlib_module_names and top not in FIRST_PARTY and top != "pydoc_data":
          found.setdefault(top, []).append(str(path.relative_to(ROOT)))
  return found


def test_dependencies_are_what_the_package_imports():
  imported = {DIST_OF_MODULE.get(m, m).lower(): files for m, files in _imports().items()}
  required = {_dist(r) for r in PYPROJECT["project"]["dependencies"]}
  extras = {_dist(r) for reqs in PYPROJECT["project"]["optional-dependencies"].values() for r in reqs}
  undeclared = {d: f[:2] for d, f in imported.items() if d not in required | extras}
  assert not undeclared, f"imported but not declared: {undeclared}"
  unused = required - set(imported)
  assert not unused, f"declared but never imported by jaxeff/ or kernels_pallas/: {sorted(unused)}"
  # optional imports (declared only in an extra) live inside functions, so importing jaxeff never needs them
  optional = {d for d in imported if d not in required}
  assert optional <= {"datasets", "pyarrow", "matplotlib", "transformers"}, optional


def test_metadata_is_publishable():
  project = PYPROJECT["project"]
  assert project["license"] == "Apache-2.0"  # an SPDX expression, not the deprecated table
  assert (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License")
  assert project["license-files"] == ["LICENSE"]
  versions = {
    c.rsplit(" :: ", 1)[-1] for c in project["classifiers"] if c.startswith("Programming Language :: Python :: 3.")
  }
  assert versions == {"3.11", "3.12", "3.13"}
  build = PYPROJECT["build-system"]["requires"]
  assert any(r.startswith("setuptools>=7") or r.startswith("setuptools>=8") for r in build), build
  assert set(PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]) == {"jaxeff*", "kernels_pallas*"}
