"""The docstring examples of the method modules run and print what they show."""

import doctest
import importlib

import pytest

MODULES = [
  "jaxeff.generation.answers",
  "jaxeff.generation.seersc",
  "jaxeff.tasks.arith",
  "jaxeff.scaling.laws",
  "jaxeff.scaling.sweep",
  "jaxeff.stack",
  "jaxeff.evals.tasks",
  "jaxeff.evals.harness",
  "jaxeff.evals.plots",
  "jaxeff.models.gguf",
  "jaxeff.models.cache",
  "jaxeff.io",
  "jaxeff.kvcache.peers",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
  result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
  assert result.attempted > 0 and result.failed == 0
