"""API.md is generated from the docstrings and current; every public function and class has a docstring."""

import importlib
import re
from pathlib import Path

from jaxeff import apidoc

API = Path(__file__).resolve().parent.parent / "API.md"


def _names_only(text: str) -> str:
  # signatures (default values' reprs) may differ across jax versions: compare names and docstrings
  return re.sub(r"^(#{3,4} `(?:class |def )?[\w.]+)\(.*`$", r"\1", text, flags=re.M)


def test_api_reference_is_current():
  assert API.is_file(), "generate it: python -m jaxeff.apidoc API.md"
  assert _names_only(API.read_text()) == _names_only(apidoc.render()), "regenerate: python -m jaxeff.apidoc API.md"


def test_every_public_function_and_class_has_a_docstring():
  missing = [
    f"{m}.{name}"
    for m in apidoc.MODULES
    for name, obj in apidoc.public_members(importlib.import_module(m))
    if not (obj.__doc__ or "").strip()
  ]
  assert not missing, missing
  assert "*(no docstring)*" not in API.read_text()
