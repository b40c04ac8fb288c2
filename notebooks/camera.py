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
# # CAMERA: micro-expert energy, structured pruning that really shrinks, mixed-precision experts
#
# CAMERA (arXiv 2508.02322) treats every channel of every expert (a row of gate and up and a column of down)
# as a micro-expert, scores it by the energy its coefficients put into the output, prunes the lowest per
# layer (CAMERA-P) or gives it fewer bits (CAMERA-Q). Here on the embedded `tiny-moe` (8 experts, top-2, a
# gated shared expert, trained by jaxeff on stdlib code): energies per layer, bits/byte vs pruning ratio
# against baselines, and the physically compacted model.

# %%
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("google.colab") is not None and importlib.util.find_spec("jaxeff") is None:
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "jaxeff[notebooks]"], check=True)

# %% tags=["parameters"]
FULL_SIZE = False  # True: 32 calibration windows of 512 tokens, 8 evaluation batches, three ratios

# %%
import jax
import jax.numpy as jnp
import numpy as np

from jaxeff.models.embedded import load_reference_model
from jaxeff.moe.camera import calibration_windows, camera_prune, compact, moe_param_bytes
from jaxeff.tokenizer import ByteTokenizer
from jaxeff.training import data as data_lib
from jaxeff.training.trainer import evaluate

print("backend:", jax.default_backend())
config, params, tok = load_reference_model("tiny-moe", jnp.float32)
n_cal, cal_len, n_eval, ratios = (32, 512, 8, [0.2, 0.4, 0.6]) if FULL_SIZE else (4, 128, 1, [0.4])
stream = np.concatenate(data_lib.tokenize_corpus("python", "train", ByteTokenizer()))
calib = calibration_windows(stream, n_cal, cal_len)
docs = data_lib.tokenize_corpus("python", "validation", tok, max_documents=60)
it = data_lib.PackedIterator(data_lib.pack_documents(docs, 256, tok.eos_id), 4, seed=0)
batches = [next(it) for _ in range(n_eval)]
blen = data_lib.token_byte_lengths(tok, config.vocab_size)
bpb = lambda p: evaluate(p, batches, config=config, byte_lengths=blen)["bits_per_byte"]
print(f"dense bits/byte {bpb(params):.3f}")

# %%
results = {}
for method in ["camera", "frequency", "magnitude", "random"]:
  results[method] = []
  for r in ratios:
    pruned, report = camera_prune(params, config, calib, r, method=method)
    results[method].append(bpb(pruned))
  print(f"{method:10s}", "  ".join(f"{int(r * 100)}%: {b:.3f}" for r, b in zip(ratios, results[method])))

pruned, report = camera_prune(params, config, calib, ratios[-1])
small = compact(pruned, config, report)
print(
  f"compacted: MoE bytes {moe_param_bytes(small) / moe_param_bytes(params):.2f} of the original; "
  f"bits/byte {bpb(small):.3f} (masked {bpb(pruned):.3f})"
)

# %%
try:
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 2, figsize=(9, 3))
  e = report.energies[0]
  axes[0].semilogy(np.sort(e)[::-1])
  axes[0].set_xlabel("micro-expert (sorted)")
  axes[0].set_ylabel("energy, layer 0")
  for method, row in results.items():
    axes[1].plot([100 * r for r in ratios], row, marker="o", label=method)
  axes[1].set_xlabel("pruned micro-experts (%)")
  axes[1].set_ylabel("bits/byte")
  axes[1].legend(fontsize=7)
  fig.tight_layout()
except ImportError:
  print("matplotlib not installed: no figure")
