"""Code translation: TransCoder-test harness on real compilers, pass@k vs its definition, SA validation."""

import json
import os
from fractions import Fraction
from math import comb
from pathlib import Path

import pytest

from jaxeff.codetrans import augment as A
from jaxeff.codetrans import evaluate as E

# The shipped sample (4 problems, CC BY-SA 2.0, tests/fixtures/transcoder) comes last: the tests run everywhere.
CANDIDATES = [
  os.environ.get("JAXEFF_TRANSCODER", ""),
  Path(__file__).resolve().parents[2].parent
  / "shared/data/transcoder/evaluation_gfg",  # ../shared beside the checkout
  Path(__file__).resolve().parents[1] / "fixtures/transcoder/evaluation_gfg",
]
STEMS = [
  "ADD_1_TO_A_GIVEN_NUMBER",
  "COUNT_SET_BITS_IN_AN_INTEGER",
  "FIND_SUM_EVEN_FACTORS_NUMBER",
  "PROGRAM_FOR_FACTORIAL_OF_A_NUMBER",
]


def _root():
  """The TransCoder-test copy: a user-given path ($JAXEFF_TRANSCODER), the workspace's shared data, else the
  shipped sample (always there)."""
  for c in CANDIDATES:
    if c and all((Path(c) / d / f"{s}{x}").is_file() for s in STEMS for d, x in E.LANG_DIRS.values()):
      return Path(c)
  raise AssertionError("the shipped TransCoder sample tests/fixtures/transcoder is missing")


def test_pass_at_k_equals_the_combinatorial_definition():
  for n in range(1, 21):
    for c in range(n + 1):
      for k in range(1, n + 1):
        exact = 1 - Fraction(comb(n - c, k), comb(n, k))
        assert E.pass_at_k(n, c, k) == pytest.approx(float(exact), abs=1e-12)
      assert E.pass_at_k(n, c, 1) == pytest.approx(c / n)
      vals = [E.pass_at_k(n, c, k) for k in range(1, n + 1)]
      assert all(b >= a - 1e-12 for a, b in zip(vals, vals[1:]))
  assert E.pass_at_k(5, 0, 3) == 0.0 and E.pass_at_k(5, 4, 2) == 1.0
  with pytest.raises(ValueError, match="at least k"):
    E.pass_at_k(3, 1, 4)


@pytest.mark.parametrize("src, tgt", [("java", "cpp"), ("cpp", "python"), ("python", "java")])
def test_gold_passes_and_wrong_candidates_fail(src, tgt):
  root = _root()
  stems = [s for s in STEMS if all((root / d / f"{s}{x}").is_file() for d, x in E.LANG_DIRS.values())][:2]
  probs = E.load_transcoder(root, src, tgt, stems)
  rep = E.evaluate(E.gold_generator, probs, progress=False, workers=2)
  assert rep["pass@k"]["1"] == 1.0 and rep["computational_accuracy"] == 1.0
  const = {
    "python": "def anything(*a):\n  return 0\n",
    "cpp": "int anything(int x) { return 0; }",
    "java": "static int anything(int x) { return 0; }",
  }[tgt]
  out = E.run_candidate(probs[0], const)
  assert out.status in ("failure", "compilation") and not out.success


def test_harness_outcomes_rename_and_result_lines():
  root = _root()
  (p,) = E.load_transcoder(root, "java", "python", ["ADD_1_TO_A_GIVEN_NUMBER"])
  renamed = E.run_candidate(p, p.tgt_gold.replace("f_gold", "my_add_one"))  # another name is renamed
  assert renamed.success and renamed.passed == renamed.total == 10
  assert E.run_candidate(p, "def f(x):\n  return x +\n").status == "compilation"
  assert E.run_candidate(p, "def f(x):\n  raise ValueError\n").status == "error"
  assert E.run_candidate(p, "def f(x):\n  while True: pass\n", timeout_s=1).status == "timeout"
  (pj,) = E.load_transcoder(root, "python", "java", ["ADD_1_TO_A_GIVEN_NUMBER"])
  assert "javafx" in pj.tgt_script and "javafx" not in E.fill(pj.tgt_script, pj.tgt_gold, "java")
  from jaxeff.sandbox import Verdict

  for text in ("#Results: 10, 10", "#Results:10, 10\n", "gold printed 3#Results: 10, 10"):
    assert E.outcome_from_verdict(Verdict("OK", text)).success
  assert E.outcome_from_verdict(Verdict("OK", "#Results: 9, 10")).status == "failure"
  assert E.outcome_from_verdict(Verdict("OK", "nothing")).status == "error"


def test_sa_validation_and_stub_llm_end_to_end():
  src = "def f(a):\n    s = 0\n    for x in a:\n        s += x\n    return s\n"
  tgt = "int f(vector<int> a) {\n  int s = 0;\n  for (int x : a) s += x;\n  return s;\n}"
  good = A.SAPair("s  =  0", "int s = 0;")
  assert A.validate_sa(good, src, tgt) == (True, "ok")  # substring modulo whitespace
  assert A.validate_sa(A.SAPair("", "int s;"), src, tgt)[0] is False
  assert A.validate_sa(A.SAPair("s = 1", "int s = 0;"), src, tgt)[1] == "source snippet is not in the source program"
  assert A.validate_sa(A.SAPair("def f(:", "int f("), "def f(:\n", "int f(")[1] == "python snippet does not parse"
  pairs = [A.SAPair("return s", "return s;"), A.SAPair("s = 0", "int s = 0;")]
  assert not A.in_order(pairs, src, tgt) and A.in_order(pairs[::-1], src, tgt)
  canned = json.dumps(
    [
      {"src": "s = 0", "tgt": "int s = 0;"},
      {"src": "return s", "tgt": "return s;"},
      {"src": "s = 0", "tgt": "int s = 0;"},
      {"src": "nope", "tgt": "x"},
    ]
  )
  responses = iter(["here you go: " + canned, "not json at all"])
  rep = A.SAGenerator(lambda prompt: next(responses)).generate([(src, tgt), (src, tgt)])
  assert [(p["src"], p["tgt"]) for p in rep.pairs] == [("s = 0", "int s = 0;"), ("return s", "return s;")]
  assert (
    rep.duplicates == 1 and rep.unparsable == 1 and rep.rejected == {"source snippet is not in the source program": 1}
  )
  with pytest.raises(ValueError, match="mode"):
    A.SAGenerator(lambda p: "", mode="by_magic")


def _pairs(n, seed=0):
  import random

  rng = random.Random(seed)
  pa, sa = [], []
  for _ in range(n):
    k, j = rng.randint(2, 9), rng.randint(1, 9)
    src = f"def f(x):\n    y = x * {k}\n    return y + {j}\n"
    tgt = f"int f(int x) {{\n  int y = x * {k};\n  return y + {j};\n}}"
    pa.append({"src": src, "tgt": tgt, "src_lang": "python", "tgt_lang": "cpp"})
    sa.append({"src": f"y = x * {k}", "tgt": f"int y = x * {k};", "src_lang": "python", "tgt_lang": "cpp"})
    sa.append({"src": f"return y + {j}", "tgt": f"return y + {j};", "src_lang": "python", "tgt_lang": "cpp"})
  return sa, pa


@pytest.mark.parametrize("order", [("sa", "pa"), ("pa", "sa")])
def test_two_stage_trains_each_stage_on_its_own_data(tmp_path, order):
  import jax

  from jaxeff.codetrans import train as T
  from jaxeff.config import ModelConfig
  from jaxeff.training.data import PackedIterator, load_rows
  from jaxeff.training.trainer import TrainConfig, evaluate

  sa, pa = _pairs(60)
  info = {
    k: T.build_examples(v, tmp_path / f"{k}.npz", seq_len=96, truncate=True) for k, v in (("sa", sa), ("pa", pa))
  }
  assert info["sa"]["truncated"] == 0 and info["pa"]["rows"] >= 20
  rows, masks = load_rows(tmp_path / "pa.npz", "train", 96)
  assert masks.sum() > 0 and masks.sum() < masks.size  # prompt tokens get zero weight

  def loss(params, cfg, name):
    r, m = load_rows(tmp_path / f"{name}.npz", "train", 96)
    it = PackedIterator(r, 8, seed=0, loss_masks=m)
    return evaluate(params, [next(it) for _ in range(3)], config=cfg)["loss"]

  base = TrainConfig(
    model=ModelConfig.tiny(max_position_embeddings=128),
    seq_len=96,
    batch_size=8,
    steps=1,
    lr=3e-3,
    warmup_steps=2,
    eval_every=0,
    eval_batches=1,
    checkpoint_every=10,
    log_every=10,
  )
  from jaxeff.models import init_params

  p0 = init_params(base.model, jax.random.key(base.seed))
  r1, r2 = T.train_two_stage(
    {k: tmp_path / f"{k}.npz" for k in ("sa", "pa")},
    base,
    T.TwoStage(order=order, stage_steps=(25, 25), lrs=(3e-3, 3e-3)),
    tmp_path / "run",
    progress=False,
  )
  first, second = order
  cfg = r1.model_config
  assert loss(r1.params, cfg, first) < loss(p0, cfg, first)  # stage 1 learns its data
  assert loss(r2.params, cfg, second) < loss(r1.params, cfg, second)  # stage 2 learns its data
  with pytest.raises(ValueError, match="order"):
    T.TwoStage(order=("sa", "sa"))


def test_function_extraction_and_sampler_translator_plug_into_the_evaluator():
  import jax

  from jaxeff.codetrans import train as T
  from jaxeff.config import ModelConfig
  from jaxeff.generation import Sampler
  from jaxeff.models import init_params

  assert (
    T.extract_function("int f(int x) { if (x) { return 1; } return 0; }\nint main(){}", "cpp")
    == "int f(int x) { if (x) { return 1; } return 0; }"
  )
  assert T.extract_function("noise\ndef g(a):\n    return a\nprint(1)\n", "python") == "def g(a):\n    return a\n"
  root = _root()
  probs = E.load_transcoder(root, "python", "cpp", ["ADD_1_TO_A_GIVEN_NUMBER"])
  cfg = ModelConfig.tiny(max_position_embeddings=1024)
  tr = T.SamplerTranslator(Sampler(cfg, init_params(cfg, jax.random.key(0))), max_new_tokens=16)
  cands = tr(probs, 2)
  assert len(cands) == 1 and len(cands[0]) == 2 and all(isinstance(c, str) for c in cands[0])
  rep = E.evaluate(tr, probs, n=2, ks=(1, 2), progress=False)
  assert rep["pass@k"]["1"] == 0.0 and rep["per_problem"][0]["statuses"][0] in ("compilation", "failure", "error")


def test_evaluate_refuses_zero_problems():
  with pytest.raises(ValueError, match="no problems to score"):
    E.evaluate(E.gold_generator, [], progress=False)


def test_examples_refuse_truncation_and_held_out_pairs_stay_out_of_training(tmp_path):
  from jaxeff.codetrans import train as T

  long = [{"src": "x = 1", "tgt": "int x = 1;\n" * 40, "src_lang": "python", "tgt_lang": "cpp"}]
  with pytest.raises(ValueError, match="1 of 1 examples are longer than a row"):
    T.build_examples(long, tmp_path / "a.npz", seq_len=64)
  assert not (tmp_path / "a.npz").exists()  # refused before writing
  assert T.build_examples(long, tmp_path / "b.npz", seq_len=64, truncate=True)["truncated"] == 1
  sa, pa = T.template_pairs(50, seed=0)
  test = T.template_pairs(30, seed=1)[1]
  kept, dropped = T.disjoint_from(test, sa, pa)
  norm = lambda c: " ".join(c.split())  # noqa: E731
  train_text = {norm(p[k]) for p in sa + pa for k in ("src", "tgt")}
  assert dropped == sum(norm(p["src"]) in train_text or norm(p["tgt"]) in train_text for p in test)
  assert all(norm(p["src"]) not in train_text and norm(p["tgt"]) not in train_text for p in kept)
  if dropped:
    with pytest.raises(ValueError, match=f"{dropped} of {len(test)} held-out pairs"):
      T.assert_disjoint(test, sa, pa)
  T.assert_disjoint(kept, sa, pa)
