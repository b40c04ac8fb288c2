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
# # Linear self-attention theory: CoT robustness bounds and GradS
#
# Two theory papers on linear self-attention (LSA): "Bounds of Chain-of-Thought Robustness" (arXiv 2509.21284)
# bounds how much a CoT iteration amplifies an input perturbation; GradS (arXiv 2508.00385) scores an in-context
# demonstration by its gradient flow towards the query. jaxeff checks both against closed forms (gradient flow
# reaches Gamma^-1; L layers = L preconditioned GD steps; GradS's score = the leave-one-out effect) and measures
# what the bounds leave out: from h_0 = 0 the fluctuation grows with K (the bound's monotone decrease needs a
# high-gain first step). Small settings by default; `FULL_SIZE = True` runs the benchmark sizes.

# %%
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("google.colab") is not None and importlib.util.find_spec("jaxeff") is None:
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "jaxeff[notebooks]"], check=True)

# %% tags=["parameters"]
FULL_SIZE = False

# %%
import tempfile

import jax

from jaxeff.theory import experiments as X

print("backend:", jax.default_backend())
out = tempfile.mkdtemp(prefix="jaxeff-theory-")
results = {}
for eid in ["E1", "E3", "E5", "E6", "E7", "E8"]:
  results[eid] = X.run(eid, out, small=not FULL_SIZE)
  print(eid, f"{results[eid]['seconds']:.1f}s")
print("E1 (iso d5 N20): uU vs Gamma^-1 rel. error", results["E1"]["result"]["iso d5 N20"]["uU_rel_error"])
print("E3: |LSA - GD| per depth", results["E3"]["result"])
print("E6 selector MSEs (k=4):", {k: round(v, 3) for k, v in results["E6"]["result"]["k4"].items()})
hi = results["E8"]["result"]["high_gain_first_step"]
print(f"E8 high-gain first step: amplification K=1 {hi['amplification_K1']:.3f} -> K=40 {hi['amplification_K40']:.3f}")

# %%
try:
  from IPython.display import Image, display

  for eid in ("E8", "E6", "E7"):
    display(Image(f"{out}/{eid}.png"))
except ImportError:
  print("figures in", out)
