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
# # jaxeff quickstart
#
# Load a model (a local Hugging Face folder, or a tiny built-in one), sample with the batched sampler
# (n samples per prompt share one prefill), and read the per-token log-probabilities and the accounting.
# Everything runs offline; on Colab the first cell installs jaxeff.

# %%
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("google.colab") is not None and importlib.util.find_spec("jaxeff") is None:
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "jaxeff[notebooks]"], check=True)

# %% tags=["parameters"]
MODEL = "default"  # or a local HF folder: "/content/Llama-3.2-1B"
FULL_SIZE = False  # True: longer generations
MAX_NEW_TOKENS = 64 if FULL_SIZE else 16

# %%
import jax

from jaxeff.generation import Sampler, SamplingParams

backend = jax.default_backend()
print("backend:", backend, "| devices:", jax.devices()[:2], "...")

if MODEL == "default":
  from jaxeff.models.embedded import default_model

  config, params, tokenizer = default_model()
else:
  from jaxeff.models import load_hf
  from jaxeff.tokenizer import load_tokenizer

  config, params = load_hf(MODEL)
  tokenizer = load_tokenizer(MODEL, config.bos_token_id)
print(config)

# %%
prompts = ["def add(a, b):", "The capital of France is"]
sampler = Sampler(config, params)
result = sampler.generate(
  [tokenizer.encode(p) for p in prompts],
  SamplingParams(max_new_tokens=MAX_NEW_TOKENS, temperature=0.8, top_p=0.95, n_samples=3),
  jax.random.key(0),
)
for b, p in enumerate(prompts):
  for s in range(3):
    print(repr(p), "->", repr(tokenizer.decode(result.sequences()[b][s])))
print(result.accounting)

# %% [markdown]
# Per-token log-probabilities of the first sample of each prompt (raw model distribution).

# %%
try:
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(7, 3))
  for b in range(len(prompts)):
    ax.plot(result.logprobs[b, 0, : result.lengths[b, 0]], marker="o", label=prompts[b])
  ax.set_xlabel("generated token")
  ax.set_ylabel("log p")
  ax.legend()
  plt.show()
except ImportError:
  print("matplotlib not installed: pip install 'jaxeff[notebooks]' for figures")
