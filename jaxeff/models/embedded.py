"""Embedded reference models: what the CLI and notebooks run without a checkpoint (nothing is downloaded).

``jaxeff/assets/`` holds small models that jaxeff trained itself on this machine's corpora with
``benchmarks/train_reference_models.py`` (HF folders in bfloat16: config.json, model.safetensors,
tokenizer.json, and TRAINING.json with the command, time and final metrics):

* ``tiny-code``: a byte-level Llama-style LM on the Python standard library's sources, 2048-token context.
* ``tiny-recall``: code + synthetic pass-key retrieval; its needle accuracy is the quality probe for sparse
  attention, KV eviction and latent caches.
* ``tiny-moe``: a Qwen2-MoE-style model on code: the probe for CAMERA pruning and quantization.
* ``tiny-arith``: digit-sum reasoning with and without chain of thought (``jaxeff.tasks.arith``): the probe for
  SeerSC and self-consistency.

``default_model()`` is ``tiny-code``. If the assets are absent (a source tree without them), it falls back to
a random-weight model of the same family so the stack still runs, and says so.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import jax
import jax.numpy as jnp

from jaxeff.config import ModelConfig
from jaxeff.models.decoder import init_params
from jaxeff.tokenizer import ByteTokenizer

ASSETS = Path(__file__).resolve().parent.parent / "assets"
REFERENCE_MODELS = ("tiny-code", "tiny-recall", "tiny-moe", "tiny-arith")


def reference_model_path(name: str) -> Path:
  """Folder of the embedded reference model ``name`` (one of ``REFERENCE_MODELS``) inside the package."""
  if name not in REFERENCE_MODELS:
    raise ValueError(f"unknown reference model {name!r}; choose one of {REFERENCE_MODELS}")
  return ASSETS / name


def load_reference_model(name: str, dtype=jnp.float32):
  """``(config, params, tokenizer)`` of an embedded reference model, or of a fetched real model.

  ``name`` is one of ``REFERENCE_MODELS`` (shipped in the package) or of ``jaxeff.models.registry.REAL_MODELS``
  (e.g. ``"smollm2-135m-instruct"``, fetched once with ``jaxeff models fetch NAME``; otherwise a
  ``ModelNotFetchedError`` names that command).
  """
  from jaxeff.models.registry import REAL_MODELS, load_real_model

  if name in REAL_MODELS:
    return load_real_model(name, dtype)
  path = reference_model_path(name)
  if not (path / "config.json").is_file():
    raise FileNotFoundError(f"reference model {name!r} is not in this installation ({path})")
  return _load_folder(path, dtype)


def default_config() -> ModelConfig:
  """Config of the default model (``tiny-code`` when its weights ship with the package)."""
  path = ASSETS / "tiny-code"
  if (path / "config.json").is_file():
    from jaxeff.models.hf_io import read_config

    return read_config(path)
  return ModelConfig.tiny(d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, head_dim=32, d_ff=384)


def default_model(dtype=jnp.float32):
  """``(config, params, tokenizer)`` of the embedded default model (``tiny-code``)."""
  try:
    return load_reference_model("tiny-code", dtype)
  except FileNotFoundError:
    warnings.warn("embedded tiny-code model missing: using random weights", stacklevel=2)
    config = default_config()
    return config, init_params(config, jax.random.key(0), dtype=dtype), ByteTokenizer()


def load(name_or_path: str, dtype=jnp.float32):
  """``(config, params, tokenizer)`` for any model name jaxeff knows or an HF folder: ``"default"`` (the
  embedded default model), a reference model (``REFERENCE_MODELS``), a fetched real model
  (``jaxeff.models.registry.REAL_MODELS``; ``ModelNotFetchedError`` names ``jaxeff models fetch`` otherwise) or a
  path to a folder with ``config.json`` and safetensors. An existing path wins over a name.

  The one resolution the CLI, the benchmarks and the notebooks share.

  Example:
    >>> config, params, tok = load("tiny-code")
    >>> config.n_layers, tok.encode("ab", add_bos=False)
    (4, [97, 98])
  """
  from jaxeff.models.registry import REAL_MODELS

  if not Path(name_or_path).exists():
    if name_or_path == "default":
      return default_model(dtype)
    if name_or_path in REFERENCE_MODELS or name_or_path in REAL_MODELS:
      return load_reference_model(name_or_path, dtype)
    if "/" not in str(name_or_path):  # a bare unknown name, not a path (load_hf explains a missing path)
      known = ", ".join(["default", *REFERENCE_MODELS, *REAL_MODELS])
      raise FileNotFoundError(
        f"{name_or_path!r} is neither a model folder (with config.json) nor a known model: {known}"
      )
  return _load_folder(name_or_path, dtype)


def _load_folder(path, dtype):
  """``(config, params, tokenizer)`` of an HF folder."""
  from jaxeff.models.hf_io import load_hf
  from jaxeff.tokenizer import load_tokenizer

  config, params = load_hf(path, dtype=dtype)
  return config, params, load_tokenizer(path, config=config)
