"""API reference generated from the docstrings: ``python -m jaxeff.apidoc API.md`` (or ``-`` for stdout).

One section per public module (``MODULES``): the module docstring, then every public function and class defined
there (names without a leading underscore; a module's ``__all__`` when it has one) with its signature and
docstring, classes with their public methods. ``tests/test_apidoc.py`` checks that ``API.md`` is current and that
every listed function and class has a docstring.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path

MODULES = (
  "jaxeff.config",
  "jaxeff.config.hf",
  "jaxeff.models.decoder",
  "jaxeff.models.layers",
  "jaxeff.models.latent",
  "jaxeff.models.mla",
  "jaxeff.models.moe",
  "jaxeff.models.hf_io",
  "jaxeff.models.embedded",
  "jaxeff.models.cache",
  "jaxeff.sharding",
  "jaxeff.tokenizer",
  "jaxeff.stack",
  "jaxeff.attention.dense",
  "jaxeff.attention.block_sparse",
  "jaxeff.attention.proxy",
  "jaxeff.attention.peers",
  "jaxeff.kvcache.base",
  "jaxeff.kvcache.quantized",
  "jaxeff.kvcache.commonkv",
  "jaxeff.kvcache.mla",
  "jaxeff.kvcache.eviction",
  "jaxeff.kvcache.judgeq",
  "jaxeff.kvcache.peers",
  "jaxeff.evals.cached",
  "jaxeff.evals.harness",
  "jaxeff.evals.tasks",
  "jaxeff.moe.camera",
  "jaxeff.moe.quant",
  "jaxeff.generation.sampler",
  "jaxeff.generation.seersc",
  "jaxeff.generation.answers",
  "jaxeff.tasks.arith",
  "jaxeff.tasks.wordmath",
  "jaxeff.training.config",
  "jaxeff.training.optim",
  "jaxeff.training.checkpoint",
  "jaxeff.training.trainer",
  "jaxeff.training.data",
  "jaxeff.training.probes",
  "jaxeff.training.judgeq",
  "jaxeff.training.mla",
  "jaxeff.scaling.laws",
  "jaxeff.scaling.sweep",
  "jaxeff.scaling.plots",
  "jaxeff.codetrans.evaluate",
  "jaxeff.codetrans.augment",
  "jaxeff.codetrans.train",
  "jaxeff.codetrans.study",
  "jaxeff.tcbench.matrix",
  "jaxeff.tcbench.score",
  "jaxeff.tcbench.pipeline",
  "jaxeff.io",
  "jaxeff.sandbox",
  "jaxeff.sandbox.isolation",
  "jaxeff.theory.lsa",
  "jaxeff.theory.oracles",
  "jaxeff.theory.cot_bound",
  "jaxeff.theory.grads",
  "jaxeff.theory.experiments",
  "jaxeff.tour",
  "kernels_pallas.block_sparse_attention",
  "kernels_pallas.latent_attention",
  "kernels_pallas.dequant_matmul",
)


def public_members(module) -> list[tuple[str, object]]:
  """(name, object) of the public functions and classes defined in ``module`` (or listed in ``__all__``)."""
  names = getattr(module, "__all__", None)
  out = []
  for name, obj in vars(module).items():
    if names is not None:
      if name not in names:
        continue
    elif name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
      continue
    if inspect.isfunction(obj) or inspect.isclass(obj):
      out.append((name, obj))
  return out


def _signature(obj) -> str:
  try:
    sig = str(inspect.signature(obj))
  except (TypeError, ValueError):
    return "(...)"
  return re.sub(r" at 0x[0-9a-f]+", "", sig)


def _doc(obj) -> str:
  return inspect.cleandoc(obj.__doc__) if obj.__doc__ else "*(no docstring)*"


def render(modules=MODULES) -> str:
  """The Markdown reference of ``modules``."""
  parts = ["# jaxeff API reference", "", "Generated from the docstrings by `python -m jaxeff.apidoc API.md`.", ""]
  parts += [f"- [`{m}`](#{m.replace('.', '')})" for m in modules] + [""]
  for name in modules:
    mod = importlib.import_module(name)
    parts += [f"## {name}", "", _doc(mod), ""]
    for member, obj in public_members(mod):
      kind = "class" if inspect.isclass(obj) else "def"
      parts += [f"### `{kind} {member}{_signature(obj)}`", "", _doc(obj), ""]
      if inspect.isclass(obj):
        for mname, meth in vars(obj).items():
          fn = meth.__func__ if isinstance(meth, (classmethod, staticmethod)) else meth
          if mname.startswith("_") or not inspect.isfunction(fn) or not fn.__doc__:
            continue
          parts += [f"#### `{member}.{mname}{_signature(fn)}`", "", _doc(fn), ""]
  return "\n".join(parts).rstrip() + "\n"


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if len(argv) != 1:
    print("usage: python -m jaxeff.apidoc OUT.md  (or - for stdout)", file=sys.stderr)
    return 2
  text = render()
  if argv[0] == "-":
    sys.stdout.write(text)
  else:
    Path(argv[0]).write_text(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
