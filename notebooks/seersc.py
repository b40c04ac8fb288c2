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
# # SeerSC: pick the self-consistency budget before sampling
#
# SeerSC (arXiv 2511.09345) draws M cheap direct answers (System 1), measures their confidence-weighted
# entropy, and fixes the number of reasoning samples B(X) in {1, N/2, N} before any reasoning starts, so
# the B(X) samples decode in one parallel call. Here on the embedded `tiny-arith` (digit sums, trained by
# jaxeff with and without chain of thought): SeerSC against SC, ESC and ASC on the same sample streams,
# and how the System-1 entropy tracks difficulty.

# %%
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("google.colab") is not None and importlib.util.find_spec("jaxeff") is None:
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "jaxeff[notebooks]"], check=True)

# %% tags=["parameters"]
FULL_SIZE = False  # True: 500 held-out problems and N = 16 (the benchmark's setting)

# %%
import jax
import numpy as np

from jaxeff.generation import Sampler
from jaxeff.generation import seersc as S
from jaxeff.models.embedded import load_reference_model
from jaxeff.tasks.arith import queries, sample_problems, seersc_prompting

print("backend:", jax.default_backend())
config, params, tok = load_reference_model("tiny-arith")
n_problems, N, M = (500, 16, 64) if FULL_SIZE else (48, 8, 32)
problems = sample_problems(n_problems, seed=1)
qs = queries(problems)
sampler = Sampler(config, params)
print(problems[0].prompt, "->", problems[0].cot())

# %%
results = {}
for method in [S.SC(n=N), S.ESC(n=N, form="window"), S.ASC(n=N), S.SeerSC(n=N, m=M)]:
  backend = S.SamplerBackend(sampler, tok, seersc_prompting(), key=jax.random.key(0)).register(qs)
  rep = S.run_batch(method, qs, backend)
  results[method.name] = (rep.summary(), rep)
  s = rep.summary()
  print(
    f"{method.name:16s} accuracy {s['accuracy']:.3f}  tokens/query {s['tokens_per_query']:6.1f} "
    f"(System 1 {s['s1_tokens'] / len(qs):4.1f})  calls/query {s['calls_per_query']:.2f}  rounds {s['rounds']}"
  )

# %%
seer = results[f"SeerSC@{N}"][1].records
z = np.array([p.nonzero for p in problems])
ent = np.array([r.entropy for r in seer])
try:
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 2, figsize=(9, 3))
  axes[0].scatter(z + np.random.default_rng(0).uniform(-0.15, 0.15, len(z)), ent, s=8)
  for t in S.MATH_THRESHOLDS:
    axes[0].axhline(t, color="grey", lw=0.8, ls="--")
  axes[0].set_xlabel("non-zero digits (difficulty)")
  axes[0].set_ylabel("System-1 entropy (bits)")
  names = list(results)
  axes[1].bar(names, [results[n][0]["tokens_per_query"] for n in names])
  axes[1].set_ylabel("tokens per query")
  axes[1].tick_params(axis="x", labelsize=7)
  fig.tight_layout()
except ImportError:
  print("matplotlib not installed: no figure")
