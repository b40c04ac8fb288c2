"""A NaN in q, k or v gives NaN out, as the plain reference does (issue 23): no attention path may turn a
corrupt input into a finite output (a NaN weight once produced a finite training loss through the flash path,
whose padding guard also zeroed NaN rows). Rows with no visible key still output 0 / a finite value."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxeff.attention import Dense
from jaxeff.attention.dense import flash_attention
from jaxeff.training.trainer import TrainingAttention
from kernels_pallas.latent_attention import latent_decode_attention, latent_decode_reference
from tests.kernels.test_latent_attention import _inputs


def _qkv(T, N=4, K=2, H=8, seed=0):
  ks = jax.random.split(jax.random.key(seed), 3)
  q = jax.random.normal(ks[0], (1, T, N, H))
  k = jax.random.normal(ks[1], (1, T, K, H))
  v = jax.random.normal(ks[2], (1, T, K, H))
  return q, k, v, jnp.arange(T)[None]


BACKENDS = {
  "dense-masked": lambda q, k, v, p: Dense()(q, k, v, p, p),  # T <= 16: one masked softmax
  "dense-blockwise": lambda q, k, v, p: Dense(block_q=16, block_k=16)(q, k, v, p, p),
  "flash": lambda q, k, v, p: flash_attention(q, k, v, p, p, block=16),
  "training": lambda q, k, v, p: TrainingAttention(block=16)(q, k, v, p, p),
}


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("where", ["q", "k", "v"])
def test_nan_input_gives_nan_output(backend, where):
  T = 12 if backend == "dense-masked" else 48
  q, k, v, pos = _qkv(T)
  t = 5  # a NaN at token 5: every query that sees token 5 (all from 5 on) must be NaN
  arrays = {"q": q, "k": k, "v": v}
  arrays[where] = arrays[where].at[0, t, 0, 0].set(jnp.nan)
  out = np.asarray(BACKENDS[backend](arrays["q"], arrays["k"], arrays["v"], pos))
  nan_rows = np.isnan(out).any(axis=(2, 3))[0]
  if where == "q":
    assert nan_rows[t]  # the query row itself
  else:
    assert nan_rows[t:].all(), nan_rows
  clean = np.asarray(BACKENDS[backend](q, k, v, pos))
  assert np.isfinite(clean).all()


def test_padding_rows_still_output_zero_not_nan():
  q, k, v, _ = _qkv(48)
  pos = jnp.where(jnp.arange(48) < 40, jnp.arange(48), -1)[None]
  out = np.asarray(flash_attention(q, k, v, pos, pos, block=16))
  assert np.isfinite(out).all() and (out[0, 40:] == 0).all()


@pytest.mark.parametrize("impl", ["reference", "xla"])
def test_latent_decode_nan_latent_gives_nan(impl):
  q, c, pos, qp, ku, vu, f = _inputs((2, 8, 2, 32, 48, 200, 64))
  c = c.at[0, 10, 0].set(jnp.nan)  # a visible latent row of batch 0
  if impl == "reference":
    out = latent_decode_reference(q, c, pos, qp, ku, vu, f)
  else:
    out = latent_decode_attention(q, c, pos, qp, ku, vu, f, implementation="xla", block=64)
  out = np.asarray(out)
  assert np.isnan(out[0]).all() and np.isfinite(out[1]).all()
