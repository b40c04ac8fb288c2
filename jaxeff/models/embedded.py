"""The embedded default model: what ``jaxeff generate`` runs without a checkpoint (no download).

For now a small Llama-style decoder with random weights (seed 0) over the byte tokenizer: it exercises the
whole stack (prefill, cache, sampler) but its text is noise. The training issue replaces it with a reference
model that jaxeff trains itself on the machine's corpora.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxeff.config import ModelConfig
from jaxeff.models.decoder import init_params
from jaxeff.tokenizer import ByteTokenizer


def default_config() -> ModelConfig:
  return ModelConfig.tiny(d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, head_dim=32, d_ff=384)


def default_model(dtype=jnp.float32):
  """``(config, params, tokenizer)`` of the embedded default model."""
  config = default_config()
  return config, init_params(config, jax.random.key(0), dtype=dtype), ByteTokenizer()
