# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # KV caches that shrink: int8/int4, CommonKV latents, cross-layer merging
#
# CommonKV (arXiv 2508.16134) factorises the K and V projections of groups of adjacent layers with ONE SVD,
# caches one latent per token per layer, and merges latents across a group's layers after prefill. Here: the
# surgery on the embedded `tiny-code` model, memory per token, and code bits/byte measured *through* the
# compressed cache, next to int8/int4 and the Palu-style (per-layer) peer.

# %%
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("google.colab") is not None and importlib.util.find_spec("jaxeff") is None:
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "jaxeff[notebooks]"], check=True)

# %% tags=["parameters"]
FULL_SIZE = False  # True: longer contexts and more sequences

# %%
import jax
import jax.numpy as jnp

from jaxeff.kvcache import CommonKV, FullCache, Quantized, compress
from jaxeff.kvcache.evaluate import cached_bits_per_byte
from jaxeff.kvcache.peers import palu_compress
from jaxeff.models.embedded import load_reference_model

print("backend:", jax.default_backend())
config, params, _ = load_reference_model("tiny-code", jnp.float32)
ctx, score, n = (1024, 64, 4) if FULL_SIZE else (256, 16, 1)
d_kv = config.n_kv_heads * config.head_dim
_, ckv_params, spec, report = compress(config, params, group_size=2, rank=d_kv)  # 50 % of the K/V memory
print("ranks per group:", spec.ranks, "relative truncation error:", [round(e, 3) for e in report["rel_error"]])
_, palu_params, palu_spec, _ = palu_compress(config, params, rank=d_kv)

# %%
settings = {
  "full": (params, FullCache),
  "int4": (params, Quantized(bits=4)),
  "commonkv 50%": (ckv_params, CommonKV(spec)),
  "commonkv 50% + int4": (ckv_params, CommonKV(spec, bits=4)),
  "palu 50%": (palu_params, CommonKV(palu_spec)),
}
results = {}
for name, (p, factory) in settings.items():
  cache = factory.init(config, 1, 8)
  per_token = cache.bytes_per_token() if hasattr(cache, "bytes_per_token") else 2 * config.n_layers * d_kv * 4
  results[name] = {
    "bytes_per_token": per_token,
    "bits_per_byte": cached_bits_per_byte(p, config, factory, context=ctx, score=score, n_seqs=n),
  }
  print(f"{name:22s} {per_token:7.0f} B/token   bits/byte {results[name]['bits_per_byte']:.3f}")

# %%
try:
  import matplotlib.pyplot as plt

  names = list(results)
  fig, ax = plt.subplots(figsize=(5, 3))
  ax.scatter([results[k]["bytes_per_token"] for k in names], [results[k]["bits_per_byte"] for k in names])
  for k in names:
    ax.annotate(k, (results[k]["bytes_per_token"], results[k]["bits_per_byte"]), fontsize=7)
  ax.set_xlabel("KV bytes per token")
  ax.set_ylabel("code bits/byte (through the cache)")
  fig.tight_layout()
except ImportError:
  print("matplotlib not installed: no figure")
