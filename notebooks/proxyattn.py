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
# # ProxyAttn: proxy-head block-sparse prefill
#
# ProxyAttn (arXiv 2509.24745) ranks key blocks with a few pooled proxy heads and gives each real head its own
# budget from its last query block. Here: the estimate on structured q/k (masks and budgets), the block-sparse
# kernel against dense attention, the peers at matched density, and retrieval on the `tiny-recall` model.
# On CPU the kernel is the XLA path; on TPU/GPU the Pallas kernels run (same call).

# %%
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("google.colab") is not None and importlib.util.find_spec("jaxeff") is None:
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "jaxeff[notebooks]"], check=True)

# %% tags=["parameters"]
FULL_SIZE = False  # True: 8K/16K tokens, head_dim 128 (minutes on CPU, instant on TPU/GPU)

# %%
import jax

from jaxeff.attention import Dense, ProxyAttention, estimate
from jaxeff.attention.bench import compare_attention
from jaxeff.attention.peers import attention_mass_recall, structured_qk
from jaxeff.attention.plots import plot_block_masks

print("backend:", jax.default_backend())
L, D = (8192, 128) if FULL_SIZE else (1024, 64)
q, k = structured_qk(jax.random.key(0), q_heads=8, kv_heads=2, length=L, head_dim=D)
est = estimate(q, k, block_size=64, stride=4, num_proxies=1, gamma=0.95, min_budget_tokens=256)
print("per-head budgets (blocks):", est.budget_blocks[0].tolist(), "density:", float(est.density()))
print("attention mass recalled:", float(attention_mass_recall(q, k, est.block_mask, 64)))
plot_block_masks(est.block_mask, budgets=est.budget_blocks, title="ProxyAttn masks (gamma 0.95)")

# %% [markdown]
# The flat heads (left) get large budgets, the sharp ones small: dynamic budgets. Now the backend end to end
# against dense attention, and the peers tuned to the same density.

# %%
rows = compare_attention([L], head_dim=D, min_budget_tokens=256 if not FULL_SIZE else 2048, repeats=1)
results = {r["method"]: {k_: r[k_] for k_ in ("speedup", "density", "recall", "rel_error")} for r in rows}

# %% [markdown]
# Retrieval on the embedded `tiny-recall` model (a pass key hidden in code): dense vs ProxyAttn prefill.

# %%
from jaxeff.models.embedded import load_reference_model
from jaxeff.training.probes import needle_accuracy

config, params, _ = load_reference_model("tiny-recall")
lengths = [1024, 2048, 4096] if FULL_SIZE else [1024]
for name, att in [("dense", Dense()), ("proxy", ProxyAttention(gamma=0.95, block_size=64, min_budget_tokens=256))]:
  acc = needle_accuracy(params, config, lengths, n=16 if FULL_SIZE else 4, attention=att)
  results[f"needle_{name}"] = acc
  print(name, acc)
