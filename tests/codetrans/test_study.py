"""The real-model translation study's pieces: the split by problem, chat examples, per-statement SA data, the
arms' step accounting, and one arm trained and translating end to end on a tiny model with a chat template."""

import json

import numpy as np
import pytest

from jaxeff.codetrans import study
from jaxeff.codetrans.augment import SAGenerator
from jaxeff.codetrans.evaluate import Problem

CHAT = (
  "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
  "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
JAVA = "static int f_gold ( int x ) {\n  int m = 1 ;\n  // flip\n  x = x ^ m ;\n  return x ;\n}\n"


@pytest.fixture(scope="module")
def bpe_folder(tmp_path_factory):
  """A tiny BPE run's export (a HF folder) with a chat template added to its tokenizer config."""
  from jaxeff.config import ModelConfig
  from jaxeff.training import TrainConfig, train_and_evaluate

  cfg = TrainConfig(
    model=ModelConfig.tiny(d_model=32, n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64),
    tokenizer="bpe",
    bpe_vocab=300,
    corpora=("pydoc",),
    max_documents=12,
    seq_len=32,
    batch_size=4,
    steps=2,
    warmup_steps=1,
    eval_every=0,
    eval_batches=1,
    checkpoint_every=0,
  )
  folder = train_and_evaluate(cfg, tmp_path_factory.mktemp("base"), progress=False).export_dir
  tc = folder / "tokenizer_config.json"
  tc.write_text(json.dumps({**json.loads(tc.read_text()), "chat_template": CHAT}))
  return folder


def _tok(folder):
  from jaxeff.models.hf_io import read_config
  from jaxeff.tokenizer import load_tokenizer

  return load_tokenizer(folder, config=read_config(folder))


def test_split_by_problem_is_disjoint_deterministic_and_order_free():
  stems = [f"PROBLEM_{i}" for i in range(600)]
  train, test = study.split_by_problem(stems, test_fraction=0.4)
  assert not set(train) & set(test) and sorted(train + test) == sorted(stems)
  assert 0.35 < len(test) / 600 < 0.45
  t2, s2 = study.split_by_problem(stems[::-1], test_fraction=0.4)
  assert set(s2) == set(test) and set(t2) == set(train)
  probs = [Problem(s, "java", "python", "", "", "") for s in stems[:50]]
  assert [p.stem for p in study.split_by_problem(probs)[1]] == [s for s in stems[:50] if s in set(test)]
  with pytest.raises(ValueError, match="test_fraction"):
    study.split_by_problem(stems, test_fraction=1.0)


def test_chat_example_masks_exactly_the_answer(bpe_folder):
  tok = _tok(bpe_folder)
  ids, mask = study.chat_example(tok, JAVA, "def f_gold(x):\n    return x ^ 1\n", "java", "python")
  prompt = study.chat_prompt(tok, JAVA, "java", "python")
  assert list(ids[: len(prompt)]) == prompt and mask.shape == (len(ids) - 1,)
  learned = ids[1:][mask == 1]
  assert learned[-1] == tok.eos_id
  assert tok.decode(learned[:-1]) == "def f_gold(x):\n    return x ^ 1\n```"
  assert tok.decode(prompt).endswith("```python\n") and "Translate this Java function to Python." in tok.decode(prompt)
  tok.chat_template = None  # a base model's folder: refused by name
  with pytest.raises(ValueError, match="chat template"):
    study.chat_prompt(tok, JAVA, "java", "python")


def test_answer_code_stops_at_the_fence_and_the_first_function():
  text = "def f_gold(x):\n    return x ^ 1\n```\nThis flips the bit.\ndef other():\n    pass\n"
  assert study.answer_code(text, "python") == "def f_gold(x):\n    return x ^ 1\n"
  assert (
    study.answer_code("int f_gold(int x) { return x; }\n```\nint g() {}", "cpp") == "int f_gold(int x) { return x; }"
  )


def test_per_statement_sa_generation_validates_and_counts():
  assert study.split_statements(JAVA, "java") == [
    "static int f_gold ( int x ) {",
    "int m = 1 ;",
    "x = x ^ m ;",
    "return x ;",
  ]
  answers = {
    "static int f_gold ( int x ) {": "def f_gold(x):\n  return 100",  # a header: its first line is kept
    "int m = 1 ;": "m = 1\nprint(m)",  # two lines for one statement: rejected
    "x = x ^ m ;": "x = x ^^ m",  # does not parse
    "return x ;": "def f(x):",  # defines a function the statement does not: rejected
  }
  seen = []

  def batch_llm(statements):
    seen.append(list(statements))
    return [answers[s] for s in statements]

  gen = SAGenerator(None, mode="per_statement", src_lang="java", tgt_lang="python", batch_llm=batch_llm)
  rep = gen.generate([(JAVA, "unused"), (JAVA, "unused")])
  assert len(seen) == 1 and len(seen[0]) == 8  # one batched call for every statement of every program
  assert rep.responses == 8 and rep.duplicates == 1
  assert rep.rejected == {
    "too many lines": 2,
    "python snippet does not parse": 2,
    "defines a function the statement does not": 2,
  }
  assert [(p["src"], p["tgt"]) for p in rep.pairs] == [("static int f_gold ( int x ) {", "def f_gold(x):")]
  assert study.statement_pair_ok("int m = 1 ;", "m = 1", "java", "python")
  assert not study.statement_pair_ok("if ( a ) {", "def check(a):", "java", "python")
  assert study.opens_block("while ( y != 0 ) {", "java") and not study.opens_block("return x ;", "java")
  with pytest.raises(ValueError, match="per_statement"):
    SAGenerator(None, mode="per_statement")
  with pytest.raises(ValueError, match="answers"):
    SAGenerator(None, mode="per_statement", src_lang="java", batch_llm=lambda s: []).generate([(JAVA, "")])


def test_arm_plans_see_the_same_pa_rows():
  plans = {a: study.arm_plan(a, "pa.npz", "sa.npz", pa_steps=60, sa_steps=30) for a in study.ARMS}
  assert plans["pa"].stages == ((("npz:pa.npz",), (1.0,), 60),)
  ((corpora, weights, steps),) = plans["pa+sa"].stages
  assert corpora == ("npz:pa.npz", "npz:sa.npz") and weights[0] * steps == pytest.approx(60)
  assert [s[2] for s in plans["sa->pa"].stages] == [30, 60] and plans["sa->pa"].stages[1][0] == ("npz:pa.npz",)
  assert [s[0][0] for s in plans["pa->sa"].stages] == ["npz:pa.npz", "npz:sa.npz"]
  with pytest.raises(ValueError, match="arm must be"):
    study.arm_plan("sa", "a", "b", pa_steps=1, sa_steps=1)
  with pytest.raises(ValueError, match="pa_weight"):
    study.arm_plan("pa+sa", "a", "b", pa_steps=1, sa_steps=1, pa_weight=1.0)


def test_an_arm_trains_in_stages_and_its_export_translates(bpe_folder, tmp_path):
  """sa->pa on a tiny model: stage 2 starts from stage 1's export, only the trainable layer moves, the final
  export loads with its tokenizer (chat template included) and ChatTranslator returns n candidates per problem."""
  from jaxeff.codetrans.train import build_examples
  from jaxeff.generation.sampler import Sampler
  from jaxeff.models.hf_io import load_hf, read_config
  from jaxeff.training import TrainConfig

  tok = _tok(bpe_folder)
  pa = [{"src": f"int x = {i} ;", "tgt": f"x = {i}", "src_lang": "java", "tgt_lang": "python"} for i in range(12)]
  sa = [{"src": f"y = {i} ;", "tgt": f"y = {i}", "src_lang": "java", "tgt_lang": "python"} for i in range(12)]
  for name, pairs in (("pa", pa), ("sa", sa)):
    build_examples(pairs, tmp_path / f"{name}.npz", seq_len=96, tokenizer=tok, example=study.chat_example)
  base = TrainConfig(
    model=read_config(bpe_folder),
    tokenizer="init_from",
    init_from=str(bpe_folder),
    trainable=r"^layers/1/",
    seq_len=96,
    batch_size=2,
    steps=1,
    warmup_steps=1,
    eval_every=0,
    eval_batches=1,
    checkpoint_every=0,
  )
  plan = study.arm_plan("sa->pa", str(tmp_path / "pa.npz"), str(tmp_path / "sa.npz"), pa_steps=2, sa_steps=2)
  res = study.train_arm(plan, base, tmp_path / "arm")
  assert (tmp_path / "arm" / "stage0" / "export").is_dir() and res.export_dir == tmp_path / "arm" / "stage1" / "export"
  _, before = load_hf(bpe_folder)
  cfg, after = load_hf(res.export_dir)
  assert np.array_equal(np.asarray(before["layers"][0]["attn"]["q"]), np.asarray(after["layers"][0]["attn"]["q"]))
  assert not np.array_equal(np.asarray(before["layers"][1]["attn"]["q"]), np.asarray(after["layers"][1]["attn"]["q"]))
  tr = study.ChatTranslator(Sampler(cfg, after), _tok(res.export_dir), max_new_tokens=8, batch_size=2)
  probs = [Problem(f"P{i}", "java", "python", f"int x = {i} ;", "", "") for i in range(3)]
  out = tr(probs, 2)
  assert len(out) == 3 and all(len(c) == 2 and all(isinstance(s, str) for s in c) for c in out)
  assert len(tr.last_texts) == 3
