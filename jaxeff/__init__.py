"""jaxeff: efficient LLM inference and training research in JAX/Flax.

Public entry points: ``ModelConfig`` (jaxeff.config), ``forward`` / ``init_params`` / ``load_hf`` /
``save_hf`` (jaxeff.models), ``Dense`` (jaxeff.attention), ``FullCache`` (jaxeff.kvcache) and
``generate`` / ``Sampler`` (jaxeff.generation).
"""

__version__ = "0.1.0"

from jaxeff.config import ModelConfig as ModelConfig
from jaxeff.config import RopeScaling as RopeScaling

_LAZY = {
  "forward": "jaxeff.models",
  "init_params": "jaxeff.models",
  "load_hf": "jaxeff.models",
  "save_hf": "jaxeff.models",
  "load_gguf": "jaxeff.models",
  "Dense": "jaxeff.attention",
  "FullCache": "jaxeff.kvcache",
  "Sampler": "jaxeff.generation",
  "SamplingParams": "jaxeff.generation",
  "generate": "jaxeff.generation",
}


def __getattr__(name):
  """The entry points above, imported on first use (``import jaxeff`` stays light)."""
  if name in _LAZY:
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
  raise AttributeError(f"module 'jaxeff' has no attribute {name!r}")


def __dir__():
  return sorted([*globals(), *_LAZY])
