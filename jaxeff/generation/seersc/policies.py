"""The four self-consistency policies as named classes over one request/sample protocol: ``SC``, ``ESC``, ``ASC``
and ``SeerSC`` (each says what to sample next for a query from what it has seen)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol

from jaxeff.generation.answers import normalize
from jaxeff.generation.seersc.scores import (
  CONFIDENCE_POLICIES,
  MATH_THRESHOLDS,
  _check_n,
  _check_thresholds,
  asc_probability,
  budget,
  confidence,
  majority_vote,
  weighted_entropy,
)


# ------------------------------------------------------------------------------------------------ samples
@dataclasses.dataclass(frozen=True)
class Sample:
  """One sampled completion: its extracted answer (``None`` if none), generated tokens (stop included), the
  log-probabilities of its answer tokens (for confidence), and its text."""

  answer: str | None
  tokens: int
  answer_logprobs: tuple[float, ...] = ()
  text: str = ""


@dataclasses.dataclass(frozen=True)
class Request:
  """Ask for samples ``first .. first + n - 1`` of query ``query``'s System-``system`` stream."""

  query: int
  system: int
  n: int
  first: int


@dataclasses.dataclass
class CallStats:
  """One batched model call: wall seconds (compile excluded), compile seconds, prompt tokens prefilled,
  generated tokens, rows."""

  wall_s: float = 0.0
  compile_s: float = 0.0
  prompt_tokens: int = 0
  generated_tokens: int = 0
  rows: int = 0


class Backend(Protocol):
  """Produces samples: one batched call for a list of requests of one system."""

  def sample(self, requests: Sequence[Request]) -> tuple[list[list[Sample]], CallStats]: ...


@dataclasses.dataclass(frozen=True)
class Query:
  """A query: its id (stable across calls: it seeds the sample streams), a payload for the backend, the gold
  answer (normalised when compared)."""

  id: int
  payload: Any = None
  gold: str | None = None


# ------------------------------------------------------------------------------------------------ methods
class Policy:
  """One query's sampling policy: ``request()`` gives (system, n) or None when finished; ``observe`` receives
  the samples; ``answer()`` is the final answer."""

  def __init__(self):
    self.s2: list[Sample] = []
    self.s1: list[Sample] = []
    self.info: dict[str, Any] = {}

  def request(self) -> tuple[int, int] | None:
    raise NotImplementedError

  def observe(self, system: int, samples: Sequence[Sample]) -> None:
    (self.s1 if system == 1 else self.s2).extend(samples)

  def votes(self) -> list[str | None]:
    return [normalize(s.answer) for s in self.s2]

  def answer(self) -> str | None:
    return majority_vote(self.votes())


@dataclasses.dataclass(frozen=True)
class SC:
  """Self-consistency: N System-2 samples in one parallel call, majority vote."""

  n: int = 8

  def __post_init__(self):
    _check_n(self.n)

  @property
  def name(self) -> str:
    return f"SC@{self.n}"

  def policy(self) -> Policy:
    n = self.n

    class _P(Policy):
      def request(self):
        return None if self.s2 else (2, n)

    return _P()


@dataclasses.dataclass(frozen=True)
class ESC:
  """Early-stopping SC: ``form="window"`` samples windows of ``window`` answers in parallel and stops at a
  unanimous window; ``form="sliding"`` samples one at a time and stops when the last ``window`` answers agree;
  at most N samples. A window holding a missing answer (None) is not unanimous."""

  n: int = 8
  window: int = 5
  form: str = "window"

  def __post_init__(self):
    _check_n(self.n)
    _check_n(self.window, "window")
    if self.form not in ("window", "sliding"):
      raise ValueError(f"ESC form must be 'window' or 'sliding', got {self.form!r}")

  @property
  def name(self) -> str:
    return f"ESC-{self.form}@{self.n}"

  def policy(self) -> Policy:
    n, w, sliding = self.n, self.window, self.form == "sliding"

    class _P(Policy):
      def _agree(self, last):
        v = self.votes()[-last:]
        return len(v) == last and v[0] is not None and all(x == v[0] for x in v)

      def request(self):
        k = len(self.s2)
        if k >= n:
          return None
        if sliding:
          return None if k >= w and self._agree(w) else (2, 1)
        if k and self._agree(min(w, k - (k - 1) // w * w)):  # the last window drawn
          return None
        return (2, min(w, n - k))

    return _P()


@dataclasses.dataclass(frozen=True)
class ASC:
  """Adaptive-consistency: one sample per call, stop when ``asc_probability(a, b) >= threshold`` (counts of the
  two most frequent normalised answers), at most N samples."""

  n: int = 8
  threshold: float = 0.95

  def __post_init__(self):
    _check_n(self.n)
    if not 0.5 < self.threshold < 1.0:
      raise ValueError(f"ASC threshold must be in (0.5, 1), got {self.threshold}")

  @property
  def name(self) -> str:
    return f"ASC@{self.n}"

  def policy(self) -> Policy:
    n, thr = self.n, self.threshold

    class _P(Policy):
      def request(self):
        if len(self.s2) >= n:
          return None
        counts = sorted(Counter(v for v in self.votes() if v is not None).values(), reverse=True) + [0, 0]
        if self.s2 and asc_probability(counts[0], counts[1]) >= thr:
          return None
        return (2, 1)

    return _P()


@dataclasses.dataclass(frozen=True)
class SeerSC:
  """SeerSC: M System-1 answers -> entropy -> budget B(X) in {1, N//2, N} -> B(X) System-2 samples in one call.

  Attributes:
    n: the configured N (SC's sample count).
    m: System-1 samples per query (64 in the paper).
    thresholds: (t1, t2) in bits (``MATH_THRESHOLDS``; ``GPQA_THRESHOLDS`` for multiple choice).
    policy: System-1 confidence policy ('avg2', 'min', 'mean').
    weighted_vote: System-2 vote weighted by each sample's answer confidence (default: plain majority).
  """

  n: int = 8
  m: int = 64
  thresholds: tuple[float, float] = MATH_THRESHOLDS
  policy_name: str = "avg2"
  weighted_vote: bool = False

  def __post_init__(self):
    _check_n(self.n)
    _check_n(self.m, "M")
    object.__setattr__(self, "thresholds", _check_thresholds(self.thresholds))
    if self.policy_name not in CONFIDENCE_POLICIES:
      raise ValueError(f"unknown confidence policy {self.policy_name!r}; choose one of {CONFIDENCE_POLICIES}")

  @property
  def name(self) -> str:
    return f"SeerSC@{self.n}"

  def policy(self) -> Policy:
    cfg = self

    class _P(Policy):
      def request(self):
        if self.s2:
          return None
        if cfg.n == 1:  # every entropy gives budget 1: System 1 would be pure overhead
          self.info.update(entropy=None, budget=1)
          return (2, 1)
        if not self.s1:
          return (1, cfg.m)
        conf = [confidence(s.answer_logprobs, cfg.policy_name) for s in self.s1]
        e = weighted_entropy([s.answer for s in self.s1], conf)
        b = budget(e, cfg.n, cfg.thresholds)
        self.info.update(entropy=e, budget=b)
        return (2, b)

      def answer(self):
        w = [confidence(s.answer_logprobs, cfg.policy_name) for s in self.s2] if cfg.weighted_vote else None
        return majority_vote(self.votes(), w)

    return _P()


Method = SC | ESC | ASC | SeerSC
