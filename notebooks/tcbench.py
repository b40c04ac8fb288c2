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
# # TC-Bench: how many wrong codes does a test benchmark need?
#
# TC-Bench (arXiv 2510.08720) runs wrong submissions against tests, builds the binary wrong-code x test
# matrix, keeps rank-many wrong codes (a basis: every observed failure pattern is a combination of them),
# chosen by WrongSelect to be as diverse as possible, and scores a test generator by the share of those codes
# its tests expose (the exclusion rate). Here: real executions of small Python programs, the matrix, the
# selection, and the fast engine against the official scan on a larger synthetic matrix.

# %%
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("google.colab") is not None and importlib.util.find_spec("jaxeff") is None:
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "jaxeff[notebooks]"], check=True)

# %% tags=["parameters"]
FULL_SIZE = False  # True: a 1,000-row synthetic matrix for the engine comparison

# %%
import time

from jaxeff import tcbench as T
from jaxeff.sandbox import Limits, Program, run_many
from jaxeff.tcbench.matrix import synthetic_matrix
from jaxeff.tcbench.pipeline import matrix_from_verdicts

# A task (print n^2) and wrong codes that each break on a few inputs.
tests = [(f"{n}\n", f"{n * n}\n") for n in range(8)]
bugs = [(1,), (2,), (3,), (4,), (5,), (1, 2), (3, 6), (6,), (2, 5, 7)]
codes = [f"n = int(input())\nprint(0 if n in {b + (-1,)} else n * n)" for b in bugs]
verdicts = run_many([Program(c, "python") for c in codes], tests, Limits(time_s=1.0))
m = matrix_from_verdicts([f"bug{b}" for b in bugs], [[v.status for v in vs] for vs in verdicts])
print("rows (A = passed, W = failed):")
for cid, row in zip(m["codes"], m["rows"]):
  print(f"  {cid:14s} {row}")
M = T.failure_matrix(m["rows"])
rows, value = T.wrongselect(M, restarts=5, seed=0)
print(
  f"real rank {m['rank']}, GF(2) rank {m['gf2_rank']}; WrongSelect keeps {[m['codes'][i] for i in rows]} (objective {value:.3f})"
)

# %%
n = 1000 if FULL_SIZE else 150
big = synthetic_matrix(n, 50, seed=n, n_bugs=50)
b0 = T.qr_basis(big)
t0 = time.perf_counter()
fast = T.local_search(big, b0, engine="fast")
t_fast = time.perf_counter() - t0
t0 = time.perf_counter()
ref = T.local_search(big, b0, max_iters=2, engine="reference")
t_ref = time.perf_counter() - t0
same = fast[2][: len(ref[2])] == ref[2]
print(
  f"{big.shape[0]} x 50: fast full search {len(fast[2]) - 1} swaps in {t_fast:.2f}s; the official scan, 2 swaps: {t_ref:.2f}s; same swaps: {same}"
)
result = {"objective": fast[1], "same_swaps": same}

# %%
try:
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 2, figsize=(9, 3))
  axes[0].imshow(M, cmap="Greys", aspect="auto")
  axes[0].set_xlabel("test")
  axes[0].set_ylabel("wrong code")
  axes[0].set_title("failure matrix")
  axes[1].plot([T.jaccard_objective(big, b) for b in fast[2]], marker=".")
  axes[1].set_xlabel("accepted swap")
  axes[1].set_ylabel("Jaccard objective")
  fig.tight_layout()
except ImportError:
  print("matplotlib not installed: no figure")
