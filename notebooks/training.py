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
# # Training with jaxeff
#
# Train a small Llama-style model on the Python standard library's own sources (offline), watch the loss,
# resume from the orbax checkpoint, and export to Hugging Face format. The same `train_and_evaluate` runs
# the scaling sweeps and the reference models; on a TPU slice set `mesh_*` and `distributed=True`.

# %%
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("google.colab") is not None and importlib.util.find_spec("jaxeff") is None:
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "jaxeff[notebooks]"], check=True)

# %% tags=["parameters"]
FULL_SIZE = False  # True: the tiny-code reference recipe (tens of minutes on a CPU, seconds on a TPU)
WORKDIR = "/tmp/jaxeff_notebook_run"

# %%
import json
import shutil
from pathlib import Path

import jax

from jaxeff.training import train_and_evaluate
from jaxeff.training.presets import smoke, tiny_code

print("backend:", jax.default_backend())
config = tiny_code() if FULL_SIZE else smoke().override(["steps=40", "eval_every=20", "checkpoint_every=20"])
shutil.rmtree(WORKDIR, ignore_errors=True)
result = train_and_evaluate(config, WORKDIR)
print("final validation:", result.final_eval)

# %% [markdown]
# Running again in the same workdir resumes from the last checkpoint (here: already finished, so it only
# re-evaluates). The loss curve comes from `metrics.jsonl`.

# %%
records = [json.loads(line) for line in Path(WORKDIR, "metrics.jsonl").read_text().splitlines()]
steps = [r["step"] for r in records if "loss" in r]
losses = [r["loss"] for r in records if "loss" in r]
try:
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6, 3))
  ax.plot(steps, losses, label="train loss (nats/token)")
  val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
  ax.plot(*zip(*val), "o", label="validation")
  ax.set_xlabel("step")
  ax.legend()
  plt.show()
except ImportError:
  print(list(zip(steps, losses)))
print("exported HF folder:", result.export_dir, sorted(p.name for p in result.export_dir.iterdir()))
