"""``arith``: labelled digit-sum problems with exact answers, in a direct and a chain-of-thought format.

The task SeerSC's miniature runs on (and GradS's ICL demos): given k labelled digits (k = 8 by default), answer
their sum mod 10.

* prompt: ``a0b3c0d0e7f0g0h2=`` (labels a, b, c, ... then the digits; ``=`` closes the question);
* System 2 (chain of thought), mode token ``T``: ``a0>0;b3>3;c0>3;...;h2>2;A:2`` — each step restates a labelled
  digit and the running sum mod 10, then ``A:`` and the answer;
* System 1 (direct), mode token ``D``: ``A:2``.

**Difficulty.** Digits are non-zero with probability ``p_nonzero`` (default 0.35), so problems share one chain
length but not one difficulty: with z non-zero digits a direct answer needs z additions in one forward pass
(a small model manages about three). ``p_nonzero`` sets the mix of easy and hard queries (like a benchmark on
which a model is mostly, not always, competent).

**A noisy teacher** (``eps``, default 0.3; ``slip_after``, default 3): training chains are written by a reasoner
that is exact while its running sum combines at most ``slip_after`` non-zero digits and afterwards, at each
further non-zero step, writes a uniformly random wrong running sum with probability ``eps`` and carries on
from it (working memory overload); a direct training answer is the conclusion of such a chain. A model trained
on this reasons exactly on easy problems, errs when sampled on hard ones, and its direct answers are uncertain
where its chains disagree: the regime where self-consistency, and SeerSC's budget, matter (a reasoner that also
slipped on problems it answers confidently would make any budget of 1 lose accuracy). With ``eps = 0`` chains
are exact and a trained model's samples rarely disagree.

Rows are byte-level (``ByteTokenizer``): ``<bos> prompt mode completion <eos>``; the loss covers the
completion and the EOS (never the prompt or the forced mode token). Problems are split by a stable hash of
their digit string (1 in 20 held out), so evaluation problems never appear in training.

Example:
  >>> p = ArithProblem((3, 7, 2))
  >>> p.prompt, p.cot(), p.direct(), p.answer, p.carries
  ('a3b7c2=', 'Ta3>3;b7>0;c2>2;A:2', 'DA:2', '2', 1)
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence

import numpy as np

from jaxeff.tokenizer import ByteTokenizer

LABELS = "abcdefghij"
MAX_DIGITS = len(LABELS)
S1_SUFFIX = "DA:"  # System 1: the direct mode token and the answer prefix, forced
S2_PREFIX = "T"  # System 2: the chain-of-thought mode token, forced


@dataclasses.dataclass(frozen=True)
class ArithProblem:
  """k labelled digits; ``answer`` = (sum of digits) mod 10."""

  digits: tuple[int, ...]

  def __post_init__(self):
    if not 1 <= len(self.digits) <= MAX_DIGITS or any(not 0 <= d <= 9 for d in self.digits):
      raise ValueError(f"an arith problem has 1..{MAX_DIGITS} digits in 0..9, got {self.digits}")

  @property
  def k(self) -> int:
    return len(self.digits)

  @property
  def nonzero(self) -> int:
    """z: the number of non-zero digits (the difficulty)."""
    return sum(d != 0 for d in self.digits)

  @property
  def carries(self) -> int:
    """Steps of the exact chain where the running sum wraps (s + d >= 10)."""
    s, c = 0, 0
    for d in self.digits:
      c += s + d >= 10
      s = (s + d) % 10
    return c

  @property
  def prompt(self) -> str:
    return "".join(f"{LABELS[i]}{d}" for i, d in enumerate(self.digits)) + "="

  @property
  def answer(self) -> str:
    return str(sum(self.digits) % 10)

  def chain(self, eps: float = 0.0, rng: np.random.Generator | None = None, slip_after: int = 3) -> list[int]:
    """Running sums written by the (noisy) teacher: exact up to the ``slip_after``-th non-zero digit, then at
    each further non-zero digit a random wrong digit with probability ``eps``."""
    sums, s, seen = [], 0, 0
    for d in self.digits:
      t = (s + d) % 10
      if d:
        seen += 1
        if eps > 0 and seen > slip_after and rng.random() < eps:
          t = int((t + rng.integers(1, 10)) % 10)
      sums.append(t)
      s = t
    return sums

  def cot(self, eps: float = 0.0, rng: np.random.Generator | None = None) -> str:
    sums = self.chain(eps, rng)
    steps = "".join(f"{LABELS[i]}{d}>{s};" for i, (d, s) in enumerate(zip(self.digits, sums)))
    return S2_PREFIX + steps + f"A:{sums[-1]}"

  def direct(self, eps: float = 0.0, rng: np.random.Generator | None = None) -> str:
    return S1_SUFFIX + str(self.chain(eps, rng)[-1])


def split_of(digits: Sequence[int]) -> str:
  """'validation' for 1 in 20 digit strings (stable hash), else 'train'."""
  h = int(hashlib.sha1("".join(map(str, digits)).encode()).hexdigest()[:8], 16)
  return "validation" if h % 20 == 0 else "train"


def sample_problems(
  n: int, *, seed: int = 0, split: str = "validation", n_digits: int = 8, p_nonzero: float = 0.35
) -> list[ArithProblem]:
  """``n`` problems of ``split`` with ``n_digits`` digits, each non-zero w.p. ``p_nonzero`` (then uniform in
  1..9); deterministic in ``seed``."""
  if not 1 <= n_digits <= MAX_DIGITS:
    raise ValueError(f"n_digits must be in 1..{MAX_DIGITS}, got {n_digits}")
  if not 0.0 <= p_nonzero <= 1.0:
    raise ValueError(f"p_nonzero must be in [0, 1], got {p_nonzero}")
  if split not in ("train", "validation"):
    raise ValueError(f"split must be 'train' or 'validation', got {split!r}")
  rng = np.random.default_rng([seed, n_digits, int(p_nonzero * 1000), 1 if split == "train" else 2])
  out = []
  while len(out) < n:
    digits = np.where(rng.random(n_digits) < p_nonzero, rng.integers(1, 10, size=n_digits), 0)
    digits = tuple(int(x) for x in digits)
    if split_of(digits) == split:
      out.append(ArithProblem(digits))
  return out


def distinct_problems(
  n: int, *, seed: int = 0, split: str = "validation", p_nonzero: float = 0.35, exclude=frozenset()
) -> list[ArithProblem]:
  """``n`` problems with distinct digits, none in ``exclude`` (digit tuples): drawn in order from the streams
  ``sample_problems(4n, seed=1000 seed + k)``, k = 0, 1, ... (a development split disjoint from a test split).

  Example:
    >>> test = distinct_problems(20, seed=1); dev = distinct_problems(10, seed=2, exclude={p.digits for p in test})
    >>> len({p.digits for p in test + dev})
    30
  """
  out, seen, draw = [], set(exclude), 0
  while len(out) < n:
    for p in sample_problems(4 * n, seed=seed * 1000 + draw, split=split, p_nonzero=p_nonzero):
      if p.digits not in seen and len(out) < n:
        seen.add(p.digits)
        out.append(p)
    draw += 1
  return out


def arith_rows(
  n_rows: int,
  seq_len: int,
  *,
  seed: int = 0,
  split: str = "train",
  cot_fraction: float = 0.5,
  eps: float = 0.3,
  n_digits: int = 8,
  p_nonzero: float = 0.35,
  tokenizer: ByteTokenizer | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """Training rows [n_rows, seq_len + 1] packed with whole examples (PAD after the last one that fits) and loss
  masks [n_rows, seq_len] on the completions (targets are row[1:]); each example is chain-of-thought with
  probability ``cot_fraction``, else direct, written by the teacher with slip rate ``eps``."""
  if not 0.0 <= cot_fraction <= 1.0 or not 0.0 <= eps < 1.0:
    raise ValueError(f"cot_fraction must be in [0, 1] and eps in [0, 1), got {cot_fraction}, {eps}")
  tok = tokenizer or ByteTokenizer()
  rng = np.random.default_rng([seed, seq_len, 77])
  per_row = seq_len // (2 * n_digits + 6) + 1
  problems = iter(sample_problems(n_rows * per_row, seed=seed, split=split, n_digits=n_digits, p_nonzero=p_nonzero))
  rows = np.full((n_rows, seq_len + 1), tok.pad_id, np.int32)
  masks = np.zeros((n_rows, seq_len), np.float32)
  for r in range(n_rows):
    at = 0
    while True:
      p = next(problems)
      body = p.cot(eps, rng) if rng.random() < cot_fraction else p.direct(eps, rng)
      head = tok.encode(p.prompt + body[0])  # bos, prompt, mode token: not trained
      tail = tok.encode(body[1:], add_bos=False) + [tok.eos_id]
      ex = head + tail
      if at + len(ex) > seq_len + 1:
        break
      rows[r, at : at + len(ex)] = ex
      masks[r, at + len(head) - 1 : at + len(ex) - 1] = 1.0
      at += len(ex)
  return rows, masks


def seersc_prompting(**overrides):
  """The ``Prompting`` of this task for ``jaxeff.generation.seersc``: System 1 forced to ``DA:``, System 2 forced
  to ``T``, answers read after the last ``A:``. An answer is one token, so System 1 generates exactly that token
  (``s1_max_tokens=1``; the paper's System 1 also stops right after its answer, at a closing-brace stop string)."""
  from jaxeff.generation.seersc import Prompting

  base = dict(s1_suffix=S1_SUFFIX, s2_prefix=S2_PREFIX, extractor="marker", s1_max_tokens=1, s2_max_tokens=64)
  base.update(overrides)
  return Prompting(**base)


def queries(problems: Sequence[ArithProblem], start_id: int = 0):
  """``seersc.Query`` objects (payload = prompt text, gold = answer)."""
  from jaxeff.generation.seersc import Query

  return [Query(start_id + i, p.prompt, p.answer) for i, p in enumerate(problems)]


def accuracy_by_k(
  config, params, problems: Sequence[ArithProblem], *, mode: str = "cot", temperature: float = 0.0, seed: int = 0
) -> dict[int, float]:
  """Single-sample accuracy per difficulty z (non-zero digits) of a model on ``problems`` (``mode`` 'cot' or 'direct'; greedy by
  default), through the batched sampler with the task's forced mode prefix."""
  import jax

  from jaxeff.generation.answers import after_marker
  from jaxeff.generation.sampler import Sampler, SamplingParams

  if mode not in ("cot", "direct"):
    raise ValueError(f"mode must be 'cot' or 'direct', got {mode!r}")
  tok = ByteTokenizer()
  forced = S2_PREFIX if mode == "cot" else S1_SUFFIX
  prompts = [tok.encode(p.prompt + forced) for p in problems]
  sp = SamplingParams(
    max_new_tokens=64 if mode == "cot" else 4, temperature=temperature, stop_tokens=(tok.eos_id,), pad_id=tok.pad_id
  )
  res = Sampler(config, params).generate(prompts, sp, jax.random.key(seed))
  hits: dict[int, list[bool]] = {}
  for b, p in enumerate(problems):
    text = tok.decode(res.tokens[b, 0, : res.lengths[b, 0]])
    ans = after_marker((S1_SUFFIX + text) if mode == "direct" else text)
    hits.setdefault(p.nonzero, []).append(ans == p.answer)
  return {k: float(np.mean(v)) for k, v in sorted(hits.items())}
