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
# # KV eviction: SnapKV, PyramidKV, H2O, StreamingLLM and Judge Q's trained soft tokens
#
# A press scores every prompt key right after prefill and keeps the top `budget` per layer and kv head: the
# cache is compacted (memory freed), positions are kept for RoPE. Judge Q (arXiv 2509.10798) trains a few
# soft-token embeddings so that their attention over the prompt matches the attention of the model's own
# answer; at inference their queries score the cache and they are dropped. Here: train soft tokens on the
# embedded `tiny-recall` model (data it generates itself) and compare pass-key accuracy through the evicted
# cache, the question arriving only after compression (kvpress's setting).

# %%
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("google.colab") is not None and importlib.util.find_spec("jaxeff") is None:
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "jaxeff[notebooks]"], check=True)

# %% tags=["parameters"]
FULL_SIZE = False  # True: 32 soft tokens, 150 steps, 2048-token needles, 40 examples per point

# %%
import jax
import jax.numpy as jnp

from jaxeff.kvcache import FullCache
from jaxeff.kvcache.evaluate import cached_needle_accuracy
from jaxeff.kvcache.eviction import Press
from jaxeff.kvcache.judgeq import JudgeQConfig, JudgeQPress, make_training_data, train_judgeq
from jaxeff.models.embedded import load_reference_model

print("backend:", jax.default_backend())
config, params, _ = load_reference_model("tiny-recall", jnp.float32)
n_soft, steps, n_ex, prompt_len = (32, 150, 64, 512) if FULL_SIZE else (8, 25, 16, 256)
length, n_needles, budgets = (2048, 40, [0.05, 0.1, 0.2, 0.5]) if FULL_SIZE else (1024, 8, [0.05, 0.2])

prompts, responses = make_training_data(params, config, n_examples=n_ex, prompt_len=prompt_len, response_len=5)
soft, history, _ = train_judgeq(params, config, prompts, responses, JudgeQConfig(n_soft=n_soft, steps=steps))
print(f"alignment loss {history[0]:.3g} -> {history[-1]:.3g}")

# %%
presses = {
  "judgeq": lambda b: JudgeQPress(soft, budget=b),
  "snapkv": lambda b: Press("snapkv", budget=b),
  "h2o": lambda b: Press("h2o", budget=b),
  "streaming": lambda b: Press("streaming", budget=b),
}
full = cached_needle_accuracy(params, config, FullCache, [length], n=n_needles)[length]
acc = {
  name: [cached_needle_accuracy(params, config, make(b), [length], n=n_needles)[length] for b in budgets]
  for name, make in presses.items()
}
results = {"full": full, **acc}
print(f"full cache: {full:.2f}")
for name, row in acc.items():
  print(f"{name:10s}", "  ".join(f"{b:.0%}: {a:.2f}" for b, a in zip(budgets, row)))

# %%
try:
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(5, 3))
  for name, row in acc.items():
    ax.plot([100 * b for b in budgets], row, marker="o", label=name)
  ax.axhline(full, color="gray", ls="--", label="full cache")
  ax.set_xlabel("KV budget (% of the prompt)")
  ax.set_ylabel(f"pass-key accuracy @ {length}")
  ax.legend(fontsize=7)
  fig.tight_layout()
except ImportError:
  print("matplotlib not installed: no figure")
