"""The long-context tasks: exact token lengths, needles present exactly once, deterministic, scored as RULER."""

from __future__ import annotations

import numpy as np
import pytest

from jaxeff.evals import TASKS, make_example, make_examples, score
from jaxeff.evals.tasks import QA_ITEMS, documentation_sections
from jaxeff.tokenizer import ByteTokenizer


def _tokenizers():
  out = [pytest.param(ByteTokenizer(), id="bytes")]
  from jaxeff.models.registry import is_fetched, model_dir

  if is_fetched("smollm2-135m-instruct"):
    from jaxeff.tokenizer import load_tokenizer

    out.append(pytest.param(load_tokenizer(model_dir("smollm2-135m-instruct")), id="smollm2"))
  return out


@pytest.mark.parametrize("tok", _tokenizers())
@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("length", [2100, 4096])
def test_exact_length_and_needles_present_once(tok, task, length):
  ex = make_example(tok, task, length, 3, seed=1)
  assert len(ex.prompt) == length == len(ex.context) + len(ex.question)
  text = tok.decode(ex.context)
  for j, ref in enumerate(ex.references):
    n = text.count(ref)
    if task == "qa":
      assert n >= 1
    elif task == "vt":  # VAR X_j = ..., then VAR X_{j+1} = VAR X_j
      assert n == (1 if j == len(ex.references) - 1 else 2), (ref, n)
    elif task != "cwe":
      assert n == 1, (ref, n)
  if task == "cwe":  # the references are exactly the 10 most frequent words of the list
    import collections
    import re

    counts = collections.Counter(re.findall(r"^\d+\. (\w+)$", text, flags=re.M))
    others = [c for w, c in counts.items() if w not in ex.references]
    assert min(counts[r] for r in ex.references) > max(others) >= 1
  for s, e in ex.needles:  # each needle span decodes to text holding its reference, inside the context
    assert 0 <= s < e <= len(ex.context)
  if task in ("niah_single", "niah_multikey", "niah_multivalue"):
    needles = [tok.decode(ex.context[s:e]) for s, e in ex.needles]
    assert all(n.startswith("One of the special magic numbers for ") for n in needles)
    assert sum(any(r in n for n in needles) for r in ex.references) == len(ex.references)
  if task == "qa":  # the answer is only in the gold section, never in the distractors
    ((s, e),) = ex.needles
    rest = tok.decode(ex.context[:s]) + tok.decode(ex.context[e:])
    assert any(r.lower() in tok.decode(ex.context[s:e]).lower() for r in ex.references)
    assert not any(r.lower() in rest.lower() for r in ex.references)
  if task == "vt":
    assert ex.references[0] in tok.decode(ex.context[ex.needles[0][0] : ex.needles[0][1]])


def test_examples_are_deterministic_and_distinct():
  tok = ByteTokenizer()
  a = make_examples(tok, "niah_multikey", 600, 3, seed=0)
  b = make_examples(tok, "niah_multikey", 600, 3, seed=0)
  c = make_examples(tok, "niah_multikey", 600, 3, seed=1)
  assert a == b and a != c
  assert len({ex.references for ex in a}) == 3
  depths = [ex.needles[0][0] / ex.length for ex in make_examples(tok, "niah_single", 800, 12)]
  assert np.ptp(depths) > 0.4  # needles spread through the context


def test_qa_items_hold_their_answers():
  sections = documentation_sections()
  for topic, _, refs in QA_ITEMS:
    assert any(r in " ".join(sections[topic].split()) for r in refs), topic


def test_score_known_outputs():
  assert score("The magic number is 1234567.", ["1234567"]) == 1.0
  assert score("the magic number is 1234568", ["1234567"]) == 0.0
  assert score("ABCDE, FGHIJ and klmno", ["ABCDE", "FGHIJ", "KLMNO", "PQRST"]) == 0.75
  assert score("anonymous functions", ["anonymous", "unnamed"], "part") == 1.0
  assert score("", ["x"], "part") == 0.0
  with pytest.raises(ValueError):
    score("x", [], "all")
  with pytest.raises(ValueError):
    score("x", ["x"], "some")


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match="unknown task"):
    make_example(ByteTokenizer(), "niah", 1024, 0)
  with pytest.raises(ValueError, match="length"):
    make_example(ByteTokenizer(), "qa", 100, 0)


def test_training_texts_are_disjoint_from_the_haystack():
  from jaxeff.evals.tasks import disjoint_training_texts, haystack_paragraphs

  corpus = "\n".join(disjoint_training_texts())
  corpus = " ".join(corpus.split())  # the haystack is whitespace-normalised
  paras = [p for p in haystack_paragraphs() if len(p) >= 80]
  rng = np.random.default_rng(0)
  sample = [paras[i] for i in rng.choice(len(paras), 150, replace=False)]
  assert not [p for p in sample if p in corpus]
  # the check can fail: the full train split (with pydoc_data) does contain the haystack
  from jaxeff.training import data as data_lib

  full = " ".join("\n".join(f.read_text(errors="replace") for f in data_lib.python_stdlib_files("train")).split())
  assert sum(p[:60] in full for p in sample) > 0
