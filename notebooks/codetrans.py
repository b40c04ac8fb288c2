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
# # Code translation: execution-based evaluation, snippet-aligned data, two-stage fine-tuning
#
# "Automated Snippet-Alignment Data Augmentation for Code Translation" (arXiv 2510.15004) augments program-aligned
# (PA) pairs with LLM-generated snippet-aligned (SA) pairs and fine-tunes in two stages. jaxeff evaluates
# translations by running them in TransCoder-test's harnesses (computational accuracy, pass@k), validates SA pairs,
# and runs the two-stage schedule on its trainer. Point `DATA` at a TransCoder-test `evaluation_gfg` copy.

# %%
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("google.colab") is not None and importlib.util.find_spec("jaxeff") is None:
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "jaxeff[notebooks]"], check=True)

# %% tags=["parameters"]
FULL_SIZE = False  # True: every problem of the direction
DATA = "../../shared/data/transcoder/evaluation_gfg"  # a local TransCoder-test copy (never downloaded)

# %%
import json
from pathlib import Path

from jaxeff.codetrans import augment as A
from jaxeff.codetrans import evaluate as E

results = {}
if (Path(DATA) / "cpp").is_dir():
  problems = E.load_transcoder(DATA, "java", "python")
  problems = problems if FULL_SIZE else problems[:8]
  rep = E.evaluate(E.gold_generator, problems, progress=False)
  results["gold java->python"] = rep["pass@k"]
  print(f"gold self-check on {len(problems)} java->python problems: pass@1 {rep['pass@k']['1']:.3f}")
  wrong = E.run_candidate(problems[0], "def g(*a):\n    return 0\n")
  print("a constant candidate:", wrong.status, f"{wrong.passed}/{wrong.total}")
else:
  print(f"no TransCoder-test copy at {DATA}: set DATA to run the evaluator")
print("pass@k of 3 successes in 10 samples:", {k: round(E.pass_at_k(10, 3, k), 3) for k in (1, 5, 10)})

# %%
src = "def f(a):\n    s = 0\n    for x in a:\n        s += x\n    return s\n"
tgt = "int f(vector<int> a) {\n  int s = 0;\n  for (int x : a) s += x;\n  return s;\n}"
stub = lambda prompt: json.dumps(
  [{"src": "s = 0", "tgt": "int s = 0;"}, {"src": "return s", "tgt": "return s;"}, {"src": "s = 1", "tgt": "x"}]
)
rep = A.SAGenerator(stub).generate([(src, tgt)])
results["sa"] = rep.pairs
print("validated SA pairs:", [(p["src"], p["tgt"]) for p in rep.pairs], "rejected:", rep.rejected)
