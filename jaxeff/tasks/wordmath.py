r"""Simple arithmetic word problems for real instruct models (SeerSC on SmolLM2-135M-Instruct).

One-step problems over small numbers (addition, subtraction, multiplication, and two-step add-then-subtract),
written from a few templates with seeded names, items and numbers; the gold answer is an integer. Small instruct
models answer a useful fraction of them (neither ~0 nor ~100 %), which is where self-consistency and budget
allocation can matter. Problems are split into "train" / "validation" by a hash of the text, and
``distinct_problems`` draws distinct ones, optionally excluding a set (a development split disjoint from a test
split).

Example:
  >>> p = sample_problems(1, seed=0)[0]
  >>> str(p.answer) == str(eval(p.expression))
  True
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable

import numpy as np

NAMES = ("Sam", "Lena", "Omar", "Mia", "Ravi", "Zoe", "Ken", "Ana")
ITEMS = ("apples", "marbles", "stickers", "coins", "books", "pencils", "cards", "shells")

TEMPLATES = (
  ("add", "{n} has {a} {i}. {n} finds {b} more {i}. How many {i} does {n} have now?", "{a} + {b}"),
  ("sub", "{n} has {a} {i} and gives {b} of them to a friend. How many {i} does {n} have left?", "{a} - {b}"),
  ("mul", "{n} has {a} boxes with {b} {i} in each box. How many {i} does {n} have in total?", "{a} * {b}"),
  (
    "two_step",
    "{n} has {a} {i}, buys {b} more and then loses {c}. How many {i} does {n} have now?",
    "{a} + {b} - {c}",
  ),
)


@dataclasses.dataclass(frozen=True)
class WordProblem:
  """A problem: its text, the arithmetic expression it encodes, the integer answer, and its template kind."""

  text: str
  expression: str
  answer: int
  kind: str

  @property
  def split(self) -> str:
    """'train' or 'validation' by a hash of the text (80 / 20)."""
    h = int(hashlib.sha256(self.text.encode()).hexdigest()[:8], 16)
    return "validation" if h % 5 == 0 else "train"


def _one(rng: np.random.Generator) -> WordProblem:
  kind, text, expr = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
  n, i = NAMES[int(rng.integers(len(NAMES)))], ITEMS[int(rng.integers(len(ITEMS)))]
  if kind == "mul":
    a, b, c = int(rng.integers(2, 10)), int(rng.integers(2, 10)), 0
  else:
    a, b = int(rng.integers(5, 40)), int(rng.integers(2, 20))
    c = int(rng.integers(1, a)) if kind == "two_step" else 0
    if kind == "sub":
      a, b = max(a, b) + 1, min(a, b)
  e = expr.format(a=a, b=b, c=c)
  return WordProblem(text.format(n=n, i=i, a=a, b=b, c=c), e, int(eval(e)), kind)  # noqa: S307 (our own digits)


def sample_problems(n: int, *, seed: int = 0, split: str | None = None) -> list[WordProblem]:
  """``n`` problems from the seeded stream (of ``split`` when given; duplicates possible: see
  ``distinct_problems``)."""
  if split not in (None, "train", "validation"):
    raise ValueError(f"split must be None, 'train' or 'validation', got {split!r}")
  rng = np.random.default_rng(seed)
  out = []
  while len(out) < n:
    p = _one(rng)
    if split is None or p.split == split:
      out.append(p)
  return out


def distinct_problems(
  n: int, *, seed: int = 0, split: str | None = "validation", exclude: Iterable[str] = ()
) -> list[WordProblem]:
  """``n`` problems with distinct texts, none in ``exclude`` (texts). Raises if the stream cannot supply them."""
  seen, out, tries = set(exclude), [], 0
  rng = np.random.default_rng(seed)
  while len(out) < n:
    tries += 1
    if tries > 200 * n + 10_000:
      raise ValueError(f"could not draw {n} distinct problems (got {len(out)})")
    p = _one(rng)
    if (split is None or p.split == split) and p.text not in seen:
      seen.add(p.text)
      out.append(p)
  return out


def chat_queries(problems, tokenizer, start_id: int = 0, system: str | None = None):
  """``seersc.Query`` objects whose payload is the chat-templated prompt (token ids) of each problem."""
  from jaxeff.generation.seersc import Query

  out = []
  for k, p in enumerate(problems):
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": p.text}]
    out.append(Query(start_id + k, tokenizer.apply_chat_template(msgs, add_generation_prompt=True), str(p.answer)))
  return out


def seersc_prompting(**overrides):
  """System 1: the assistant turn forced to "The answer is " (3 tokens: the digits of the number); System 2:
  forced to "Let's think step by step." and stopped at the end of its first line (``stop_ids``: the model's
  newline tokens), where small models write the computation "a + b = c"; answers = the last number either
  writes."""
  from jaxeff.generation.seersc import Prompting

  base = dict(
    s1_suffix="The answer is ",
    s2_prefix="Let's think step by step.",
    extractor="last_number",
    s1_max_tokens=3,
    s2_max_tokens=64,
    s1_temperature=1.0,
    s2_temperature=1.0,
  )
  base.update(overrides)
  return Prompting(**base)


def stop_ids(tokenizer) -> tuple[int, ...]:
  """End of turn plus the newline tokens: System 2's answer line ends there."""
  ids = {tokenizer.eos_id}
  for text in ("\n", "\n\n"):
    enc = tokenizer.encode(text, add_bos=False)
    if len(enc) == 1:
      ids.add(enc[0])
  return tuple(sorted(i for i in ids if i is not None))
