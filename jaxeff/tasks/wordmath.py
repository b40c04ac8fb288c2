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
from collections.abc import Iterable, Sequence

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


KINDS = tuple(t[0] for t in TEMPLATES)


def _check_kinds(kinds) -> tuple[str, ...]:
  kinds = KINDS if kinds is None else tuple(kinds)
  bad = [k for k in kinds if k not in KINDS]
  if bad or not kinds:
    raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got {kinds!r}")
  return kinds


def _one(rng: np.random.Generator, kinds: tuple[str, ...] = KINDS) -> WordProblem:
  pool = [t for t in TEMPLATES if t[0] in kinds]
  kind, text, expr = pool[int(rng.integers(len(pool)))]
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
  n: int,
  *,
  seed: int = 0,
  split: str | None = "validation",
  exclude: Iterable[str] = (),
  kinds: Iterable[str] | None = None,
) -> list[WordProblem]:
  """``n`` problems with distinct texts, none in ``exclude`` (texts), of the template ``kinds`` (default: all of
  ``KINDS``; SmolLM2-135M-Instruct answers "mul", one-digit products, and little else). Raises if the stream
  cannot supply them."""
  kinds = _check_kinds(kinds)
  seen, out, tries = set(exclude), [], 0
  rng = np.random.default_rng(seed)
  while len(out) < n:
    tries += 1
    if tries > 200 * n + 10_000:
      raise ValueError(f"could not draw {n} distinct problems (got {len(out)})")
    p = _one(rng, kinds)
    if (split is None or p.split == split) and p.text not in seen:
      seen.add(p.text)
      out.append(p)
  return out


def worked_answer(p: WordProblem) -> str:
  """The answer line a demonstration shows: ``"<expression> = <answer>. The answer is <answer>."``"""
  return f"{p.expression} = {p.answer}. The answer is {p.answer}."


def demonstrations(k: int, *, seed: int = 99, kinds: Iterable[str] | None = None) -> list[WordProblem]:
  """``k`` fixed worked examples drawn from the *train* split (``split`` hashes texts, so they never coincide with
  the validation-split problems ``distinct_problems`` draws by default), one per kind in turn."""
  kinds = _check_kinds(kinds)
  out: list[WordProblem] = []
  for i in range(k):
    kind = kinds[i % len(kinds)]
    out += distinct_problems(1, seed=seed + i, split="train", kinds=(kind,), exclude={p.text for p in out})
  return out


def chat_queries(
  problems,
  tokenizer,
  start_id: int = 0,
  system: str | None = None,
  shots: Sequence[WordProblem] = (),
):
  """``seersc.Query`` objects whose payload is the chat-templated prompt (token ids) of each problem, after the
  ``shots`` as earlier user / assistant turns answered with ``worked_answer`` (the form System 2 then writes on
  its first line). A shot equal to a problem raises (it would show the answer).

  Example:
    >>> from types import SimpleNamespace
    >>> tok = SimpleNamespace(apply_chat_template=lambda m, add_generation_prompt: [len(m)])
    >>> chat_queries(sample_problems(1), tok, shots=demonstrations(2))[0].payload  # 2 shots x 2 turns + 1
    [5]
  """
  from jaxeff.generation.seersc import Query

  leaked = {s.text for s in shots} & {p.text for p in problems}
  if leaked:
    raise ValueError(f"{len(leaked)} demonstration(s) are also queries, e.g. {sorted(leaked)[0]!r}")
  turns = [
    m for s in shots for m in ({"role": "user", "content": s.text}, {"role": "assistant", "content": worked_answer(s)})
  ]
  out = []
  for k, p in enumerate(problems):
    msgs = ([{"role": "system", "content": system}] if system else []) + turns + [{"role": "user", "content": p.text}]
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
