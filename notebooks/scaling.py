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
# # Scaling laws for code: sweep, fit (Chinchilla and Farseer), allocate compute
#
# "Scaling Laws for Code" (arXiv 2510.08702) fits Chinchilla's and Farseer's laws to 117 runs and finds code
# more data-hungry than natural language. jaxeff runs the sweep on its own trainer (one cosine schedule per
# (N, D) point, a resumable table) and fits both laws in float64 in seconds. Small setting: a 2 x 2 sweep on
# stdlib code; `FULL_SIZE = True` runs the 3 x 4 grid of `benchmarks/bench_scaling.py` (about 4 minutes per arm).

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

from jaxeff.scaling import laws
from jaxeff.scaling import sweep as sw

print("backend:", jax.default_backend())
# The laws first, on the published parameters: Epoch's Chinchilla re-fit and the quoted code Farseer law.
for C in (1e20, 1e22):
  print(
    f"C={C:.0e}: Chinchilla (Epoch) D/N = {laws.optimal_allocation(laws.EPOCH, C).tokens_per_param:.1f}, "
    f"code Farseer D/N = {laws.optimal_allocation(laws.CODE_FARSEER, C).tokens_per_param:.1f}"
  )

# %%
sizes, tokens = (
  ([(32, 2), (48, 2), (64, 2)], [49152, 98304, 196608, 393216]) if FULL_SIZE else ([(16, 1), (32, 1)], [4096, 8192])
)
workdir = tempfile.mkdtemp(prefix="jaxeff-sweep-")
rows = sw.run_sweep(
  sw.grid_design(sizes, tokens),
  workdir,
  seq_len=128 if FULL_SIZE else 32,
  batch_size=32 if FULL_SIZE else 8,
  eval_batches=8 if FULL_SIZE else 2,
  max_documents=None if FULL_SIZE else 40,
)
N, D, L = sw.table_arrays(rows)
for r in rows:
  print(
    f"{r['name']:28s} N={int(r['N']):7d} D={int(r['D']):7d} loss={r['loss']:.3f} bits/byte={r['bits_per_byte']:.3f}"
  )

# %%
results = {"chinchilla": laws.fit_chinchilla(N, D, L)}
if FULL_SIZE:
  results["farseer"] = laws.fit_farseer(N, D, L)
for name, fit in results.items():
  print(
    name,
    {k: round(float(v), 4) for k, v in fit.params.__dict__.items()},
    f"rel. error {laws.mean_relative_error(fit, N, D, L):.2%}",
  )
try:
  from jaxeff.scaling.plots import plot_fits

  plot_fits(N, D, L, results, f"{workdir}/fit.png", title="stdlib code")
  from IPython.display import Image, display

  display(Image(f"{workdir}/fit.png"))
except ImportError:
  print("matplotlib / IPython not installed: no figure")
