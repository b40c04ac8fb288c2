r"""SeerSC: entropy-budgeted self-consistency, with SC, ESC and ASC run by one batch scheduler.

Size (over 500 lines): the four policies share one batch scheduler and one stream state, kept together until
the split into named policy classes (issue 22, not done yet).

Ji et al., "Seer Self-Consistency: Advance Budget Estimation for Adaptive Test-Time Scaling", Findings of ACL
2026 (arXiv 2511.09345). A cheap System-1 pass (M direct answers forced by an answer prefix) estimates the
answer entropy of a query and fixes its System-2 budget **before** any reasoning is sampled, so all B(X)
reasoning samples decode in one parallel call:

* confidence of a System-1 answer A with answer tokens a_1..a_k: S(A) = exp((1/k) sum_j log p(a_j))
  (``policy="avg2"``; "min" and the arithmetic "mean" as options);
* class weights W(c) = sum_{A in c} S(A) over exact (stripped) answer strings, Wn = W / sum W,
  entropy E(X) = -sum_c Wn(c) log2 Wn(c) bits (0 when every weight is 0);
* budget B(X) = 1 if E < t1, N // 2 if t1 <= E < t2, N otherwise (t = (0.6, 2.0) bits; (0.2, 0.7) for GPQA);
* System 2: B(X) samples in one call sharing the prompt prefill, majority vote over normalised answers (ties go
  to the first answer seen), weighted vote as an option. No early stopping.

Baselines, each with its real sequential structure (a round = one batched model call for every query still
running; per query, a call's latency is its longest row):

* ``SC`` (Wang et al. 2022): N samples in one call, majority vote.
* ``ESC`` (Li et al., ICLR 2024): ``form="window"`` draws windows of w samples in parallel and stops at a
  unanimous window (the paper); ``form="sliding"`` draws one sample per call and stops when the last w answers
  agree (the SeerSC repository's version, w = 5); both capped at N.
* ``ASC`` (Aggarwal et al., EMNLP 2023): one sample per call; stop when P(p1 > p2 | a, b) >= 0.95 with a, b the
  counts of the two most frequent answers: 1 - I_0.5(a + 1, b + 1) (the Beta(a+1, b+1) survival at 1/2),
  computed exactly as P(Binomial(a + b + 1, 1/2) <= a); capped at N.

Deviations from the released code (``noforit/SeerSC`` at e4127c4), whose driver does not run as shipped
(undefined ``sample_num``/``dataset_name``/``base_num``, the 'nothinking' vs 'nothink' mode check, a missing
serving script): thresholds, confidence policy, prompts' structure and sampling settings are ported; the
medium budget is ``max(1, N // 2)`` so N = 1 stays valid, and with N = 1 System 1 is skipped (every entropy gives
budget 1, so it would be pure overhead: SeerSC@1 is single sampling, in accounting too). Which probability S(A)
uses is UNVERIFIED: ``logprob_mode="raw"`` (vLLM V1's default: log-softmax before temperature / top-p) or
``"processed"`` (the sampling distribution). Whether the paper counts System-1 tokens is UNVERIFIED: reports
keep System-1 and System-2 tokens apart.

Example:
  >>> backend = ScriptedBackend({(0, 2): [("7", 5)] * 8, (0, 1): [("7", 1, -0.01)] * 64})
  >>> rep = run_batch(SeerSC(n=8), [Query(0, gold="7")], backend)
  >>> rep.records[0].s2_samples, rep.records[0].answer, rep.records[0].s1_tokens
  (1, '7', 64)
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from jaxeff.generation.answers import get_extractor, normalize

MATH_THRESHOLDS = (0.6, 2.0)
GPQA_THRESHOLDS = (0.2, 0.7)
CONFIDENCE_POLICIES = ("avg2", "min", "mean")


# ------------------------------------------------------------------------------------------------ scores
def confidence(logprobs: Sequence[float] | np.ndarray, policy: str = "avg2") -> float:
  r"""Confidence S(A) of one answer from its tokens' log-probabilities [k].

  ``avg2``: exp(mean_j log p_j) (geometric mean, the official default); ``min``: exp(min_j log p_j);
  ``mean``: mean_j p_j. An empty answer has confidence 0.

  Example:
    >>> round(confidence(np.log([0.5, 0.8])), 6)
    0.632456
  """
  if policy not in CONFIDENCE_POLICIES:
    raise ValueError(f"unknown confidence policy {policy!r}; choose one of {CONFIDENCE_POLICIES}")
  lp = np.asarray(logprobs, np.float64).reshape(-1)
  if lp.size == 0:
    return 0.0
  if policy == "avg2":
    return float(np.exp(lp.mean()))
  if policy == "min":
    return float(np.exp(lp.min()))
  return float(np.exp(lp).mean())


def weighted_entropy(answers: Sequence[str | None], confidences: Sequence[float], base: float = 2.0) -> float:
  r"""Confidence-weighted answer entropy E = -sum_c Wn(c) log_base Wn(c).

  Classes are exact answer strings after ``strip()`` (no math normalisation; ``None`` = one "no answer"
  class); W(c) = sum of the confidences in c, Wn = W / sum W. All-zero weights give 0.

  Example:
    >>> weighted_entropy(["1", "2", "3", "4"], [0.3] * 4)
    2.0
  """
  if len(answers) != len(confidences):
    raise ValueError(f"{len(answers)} answers but {len(confidences)} confidences")
  if base <= 0 or base == 1:
    raise ValueError(f"entropy base must be positive and != 1, got {base}")
  w: dict[Any, float] = {}
  for a, c in zip(answers, confidences):
    if c < 0 or not math.isfinite(c):
      raise ValueError(f"confidences must be finite and >= 0, got {c}")
    k = a.strip() if isinstance(a, str) else None
    w[k] = w.get(k, 0.0) + float(c)
  total = sum(w.values())
  if total <= 0:
    return 0.0
  p = np.array([v / total for v in w.values() if v > 0])
  return float(-(p * np.log(p)).sum() / math.log(base))


def _check_thresholds(thresholds: Sequence[float]) -> tuple[float, float]:
  t = tuple(float(x) for x in thresholds)
  if len(t) != 2 or not (0.0 <= t[0] <= t[1]) or not all(math.isfinite(x) for x in t):
    raise ValueError(f"thresholds must be two finite numbers 0 <= t1 <= t2, got {tuple(thresholds)}")
  return t


def _check_n(n: int, name: str = "N") -> int:
  if isinstance(n, bool) or int(n) != n or n < 1:
    raise ValueError(f"{name} must be an integer >= 1, got {n!r}")
  return int(n)


def budget(entropy: float, n: int, thresholds: Sequence[float] = MATH_THRESHOLDS) -> int:
  """System-2 samples for a query: 1 if E < t1, max(1, N // 2) if t1 <= E < t2, else N.

  Example:
    >>> [budget(e, 8) for e in (0.5999, 0.6, 1.9999, 2.0)]
    [1, 4, 4, 8]
  """
  n = _check_n(n)
  t1, t2 = _check_thresholds(thresholds)
  if not math.isfinite(entropy) or entropy < 0:
    raise ValueError(f"entropy must be finite and >= 0, got {entropy}")
  if entropy < t1:
    return 1
  if entropy < t2:
    return max(1, n // 2)
  return n


def majority_vote(answers: Sequence[str | None], weights: Sequence[float] | None = None) -> str | None:
  """The most frequent (or heaviest) answer; ``None`` answers are ignored; ties go to the first one seen."""
  score: dict[str, float] = {}
  for i, a in enumerate(answers):
    if a is None:
      continue
    score[a] = score.get(a, 0.0) + (1.0 if weights is None else float(weights[i]))
  if not score:
    return None
  best = max(score.values())
  return next(a for a, v in score.items() if v == best)


def asc_probability(a: int, b: int) -> float:
  r"""ASC's stopping statistic P(p1 > p2 | a, b) = int_{1/2}^1 x^a (1-x)^b dx / B(a+1, b+1)
  = 1 - I_{1/2}(a+1, b+1) = P(Binomial(a+b+1, 1/2) <= a), exact for integer counts.

  Example:
    >>> asc_probability(4, 0)
    0.96875
  """
  if a < 0 or b < 0:
    raise ValueError(f"counts must be >= 0, got a={a}, b={b}")
  n = a + b + 1
  return math.fsum(math.comb(n, j) for j in range(a + 1)) / 2.0**n


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


# ------------------------------------------------------------------------------------------------ scheduler
@dataclasses.dataclass
class QueryRecord:
  """Per-query outcome, accounting and trace. ``latency_tokens``: sum over this query's calls of its longest row
  (the parallel-decoding latency model); ``calls``: sequential model calls it took part in; ``s1_answers`` /
  ``s2_answers``: the extracted answers in sampling order."""

  query: int
  answer: str | None
  correct: bool | None
  s1_tokens: int
  s2_tokens: int
  s2_samples: int
  calls: int
  latency_tokens: int
  entropy: float | None = None
  budget: int | None = None
  s1_answers: list[str | None] = dataclasses.field(default_factory=list)
  s2_answers: list[str | None] = dataclasses.field(default_factory=list)

  @property
  def tokens(self) -> int:
    return self.s1_tokens + self.s2_tokens


@dataclasses.dataclass
class RunReport:
  """A method run over many queries: per-query records, rounds (sequential batched calls), wall time."""

  method: str
  records: list[QueryRecord]
  rounds: int
  wall_s: float
  compile_s: float
  prompt_tokens: int
  calls: list[CallStats]

  def summary(self) -> dict[str, float]:
    r = self.records
    graded = [x.correct for x in r if x.correct is not None]
    q = max(len(r), 1)
    return {
      "queries": len(r),
      "accuracy": float(np.mean(graded)) if graded else float("nan"),
      "tokens": int(sum(x.tokens for x in r)),
      "s1_tokens": int(sum(x.s1_tokens for x in r)),
      "s2_tokens": int(sum(x.s2_tokens for x in r)),
      "tokens_per_query": sum(x.tokens for x in r) / q,
      "s2_samples_per_query": sum(x.s2_samples for x in r) / q,
      "prompt_tokens": self.prompt_tokens,
      "calls_per_query": sum(x.calls for x in r) / q,
      "latency_tokens_per_query": sum(x.latency_tokens for x in r) / q,
      "rounds": self.rounds,
      "wall_s": self.wall_s,
      "compile_s": self.compile_s,
    }


def run_batch(
  method: Method,
  queries: Sequence[Query],
  backend: Backend,
  *,
  batch_size: int | None = None,
  progress: bool = False,
) -> RunReport:
  """Run ``method`` on many queries together: each round gathers the pending requests of every running query
  into one batched backend call per system, so sequential methods pay one round per step (the realistic
  serving setting). ``batch_size`` caps the queries in flight (default: all).

  Example:
    >>> b = ScriptedBackend({(0, 2): [("1", 4), ("2", 4), ("1", 4)]})
    >>> run_batch(SC(n=3), [Query(0, gold="1")], b).summary()["accuracy"]
    1.0
  """
  if not queries:
    raise ValueError("no queries given")
  ids = [q.id for q in queries]
  if len(set(ids)) != len(ids):
    raise ValueError("query ids must be unique (they seed the sample streams)")
  size = len(queries) if batch_size is None else _check_n(batch_size, "batch_size")
  records: list[QueryRecord] = []
  calls: list[CallStats] = []
  rounds = 0
  bar = _progress(len(queries), f"{method.name}") if progress else None
  for start in range(0, len(queries), size):
    chunk = list(queries[start : start + size])
    pols = [method.policy() for _ in chunk]
    ncalls = [0] * len(chunk)
    latency = [0] * len(chunk)
    while True:
      pending = [(i, pol.request()) for i, pol in enumerate(pols)]
      pending = [(i, r) for i, r in pending if r is not None]
      if not pending:
        break
      rounds += 1
      for system in (1, 2):
        group = [(i, n) for i, (s, n) in pending if s == system]
        if not group:
          continue
        reqs = [Request(chunk[i].id, system, n, len(pols[i].s1 if system == 1 else pols[i].s2)) for i, n in group]
        out, stats = backend.sample(reqs)
        calls.append(stats)
        for (i, n), samples in zip(group, out):
          if len(samples) != n:
            raise RuntimeError(f"backend returned {len(samples)} samples for a request of {n}")
          pols[i].observe(system, samples)
          ncalls[i] += 1
          latency[i] += max(s.tokens for s in samples)
    for i, (q, pol) in enumerate(zip(chunk, pols)):
      ans = pol.answer()
      records.append(
        QueryRecord(
          query=q.id,
          answer=ans,
          correct=None if q.gold is None else ans is not None and ans == normalize(q.gold),
          s1_tokens=sum(s.tokens for s in pol.s1),
          s2_tokens=sum(s.tokens for s in pol.s2),
          s2_samples=len(pol.s2),
          calls=ncalls[i],
          latency_tokens=latency[i],
          entropy=pol.info.get("entropy"),
          budget=pol.info.get("budget"),
          s1_answers=[x.answer for x in pol.s1],
          s2_answers=[x.answer for x in pol.s2],
        )
      )
    if bar is not None:
      bar.update(len(chunk))
  if bar is not None:
    bar.close()
  return RunReport(
    method=method.name,
    records=records,
    rounds=rounds,
    wall_s=sum(c.wall_s for c in calls),
    compile_s=sum(c.compile_s for c in calls),
    prompt_tokens=sum(c.prompt_tokens for c in calls),
    calls=calls,
  )


def _progress(total: int, desc: str):
  from tqdm.auto import tqdm

  return tqdm(total=total, desc=desc, unit="query", leave=False)


# ------------------------------------------------------------------------------------------------ backends
class ScriptedBackend:
  """A backend replaying scripted sample streams: ``streams[(query_id, system)]`` is a list of
  ``(answer, tokens)`` or ``(answer, tokens, logprob_per_answer_token)``; request (q, s, n, first) returns
  items first..first+n-1. For tests and dry runs of the accounting (every call is 1 ms of modelled wall time)."""

  def __init__(self, streams: dict[tuple[int, int], Sequence[tuple]]):
    self.streams = streams
    self.log: list[list[Request]] = []

  def sample(self, requests):
    self.log.append(list(requests))
    out = []
    for r in requests:
      stream = self.streams[(r.query, r.system)]
      if r.first + r.n > len(stream):
        raise IndexError(f"stream {(r.query, r.system)} has {len(stream)} samples, asked up to {r.first + r.n}")
      items = stream[r.first : r.first + r.n]
      out.append([Sample(a, int(t), (float(x[0]),) if x else (0.0,)) for a, t, *x in items])
    stats = CallStats(wall_s=1e-3, prompt_tokens=0, generated_tokens=sum(s.tokens for o in out for s in o))
    stats.rows = sum(len(o) for o in out)
    return out, stats


@dataclasses.dataclass(frozen=True)
class Prompting:
  """How a query becomes System-1 and System-2 prompts and how answers are read back.

  Attributes:
    s1_suffix: text forced after the prompt for System 1 (e.g. ``"So, the final answer is \\\\"``).
    s2_prefix: text forced after the prompt for System 2 (e.g. a thinking tag or mode token).
    extractor: answer extractor name (``jaxeff.generation.answers``) applied to System-2 text, and to
      ``s1_suffix + System-1 text``.
    s1_max_tokens, s2_max_tokens: generation caps.
    s1_temperature, s2_temperature, top_p: sampling (paper: System 1 at 0.5 or 1.0, System 2 at 1.0, top-p 0.95).
    logprob_mode: 'raw' (log-softmax before temperature/top-p; vLLM V1's default) or 'processed'.
  """

  s1_suffix: str = "So, the final answer is \\"
  s2_prefix: str = ""
  extractor: str = "boxed"
  s1_max_tokens: int = 16
  s2_max_tokens: int = 256
  s1_temperature: float = 1.0
  s2_temperature: float = 1.0
  top_p: float = 0.95
  logprob_mode: str = "raw"

  def __post_init__(self):
    get_extractor(self.extractor)
    if self.logprob_mode not in ("raw", "processed"):
      raise ValueError(f"logprob_mode must be 'raw' or 'processed', got {self.logprob_mode!r}")


class SamplerBackend:
  """Samples with a jaxeff ``Sampler``: query payloads are prompt strings (or token lists); System 1 prompts are
  prompt + ``s1_suffix``, System 2 prompt + ``s2_prefix``; all requests of a call decode in one batch with
  per-row keys folded from (2 * query id + system - 1, sample index), so every method sees the same streams.

  Confidence uses the answer tokens: the generated tokens before the stop token (the stop string is outside
  the answer), after the last token that closes an answer opener when the forced suffix does not already end
  with one (e.g. the token "boxed")."""

  def __init__(self, sampler, tokenizer, prompting: Prompting, *, key, stop_ids: Sequence[int] = ()):
    from jaxeff.generation.sampler import SamplingParams

    self.sampler, self.tok, self.p, self.key = sampler, tokenizer, prompting, key
    stop = tuple(stop_ids) or ((tokenizer.eos_id,) if getattr(tokenizer, "eos_id", None) is not None else ())
    pad = getattr(tokenizer, "pad_id", None) or 0
    self.params = {
      1: SamplingParams(
        max_new_tokens=prompting.s1_max_tokens,
        temperature=prompting.s1_temperature,
        top_p=prompting.top_p,
        stop_tokens=stop,
        pad_id=pad,
      ),
      2: SamplingParams(
        max_new_tokens=prompting.s2_max_tokens,
        temperature=prompting.s2_temperature,
        top_p=prompting.top_p,
        stop_tokens=stop,
        pad_id=pad,
      ),
    }
    self.stop = set(stop)
    self.extract: Callable[[str], str | None] = get_extractor(prompting.extractor)
    self.payloads: dict[int, Any] = {}

  def register(self, queries: Sequence[Query]) -> SamplerBackend:
    """Remember the queries' prompts (by id)."""
    for q in queries:
      self.payloads[q.id] = q.payload
    return self

  def _prompt(self, qid: int, system: int) -> list[int]:
    base = self.payloads[qid]
    ids = self.tok.encode(base) if isinstance(base, str) else list(base)
    extra = self.p.s1_suffix if system == 1 else self.p.s2_prefix
    return ids + (self.tok.encode(extra, add_bos=False) if extra else [])

  def sample(self, requests):
    system = requests[0].system
    if any(r.system != system for r in requests):
      raise ValueError("one call samples one system")
    prompts = [self._prompt(r.query, system) for r in requests]
    res = self.sampler.generate(
      prompts,
      self.params[system],
      self.key,
      n=[r.n for r in requests],
      prompt_ids=[2 * r.query + system - 1 for r in requests],
      first_sample=[r.first for r in requests],
    )
    lps = res.logprobs if self.p.logprob_mode == "raw" else res.sample_logprobs
    out = []
    for b, r in enumerate(requests):
      samples = []
      for s in range(r.n):
        L = int(res.lengths[b, s])
        toks = res.tokens[b, s, :L].tolist()
        body = L - 1 if L and toks[-1] in self.stop else L
        text = self.tok.decode(toks[:body])
        read = (self.p.s1_suffix + text) if system == 1 else text
        samples.append(Sample(self.extract(read), L, tuple(float(x) for x in lps[b, s, :body]), text))
      out.append(samples)
    a = res.accounting
    stats = CallStats(
      wall_s=a.total_s,
      compile_s=a.compile_s,
      prompt_tokens=a.prompt_tokens,
      generated_tokens=a.generated_tokens,
      rows=int(sum(r.n for r in requests)),
    )
    return out, stats


def seersc(
  prompts: Sequence[str],
  sampler,
  tokenizer,
  *,
  n: int = 8,
  m: int = 64,
  thresholds: Sequence[float] = MATH_THRESHOLDS,
  prompting: Prompting | None = None,
  golds: Sequence[str | None] | None = None,
  key=None,
  batch_size: int | None = None,
) -> RunReport:
  """SeerSC on text prompts with a jaxeff ``Sampler``: the answers, per-system token counts and the trace.

  Example:
    >>> from jaxeff.models.embedded import load_reference_model
    >>> from jaxeff.generation import Sampler
    >>> from jaxeff.tasks.arith import seersc_prompting
    >>> cfg, params, tok = load_reference_model("tiny-arith")
    >>> rep = seersc(["a3b0c4d0e0f0g0h1="], Sampler(cfg, params), tok, prompting=seersc_prompting(), m=16)
    >>> rep.records[0].answer, rep.records[0].budget
    ('8', 1)
  """
  import jax

  if golds is not None and len(golds) != len(prompts):
    raise ValueError(f"{len(prompts)} prompts but {len(golds)} gold answers")
  qs = [Query(i, p, None if golds is None else golds[i]) for i, p in enumerate(prompts)]
  backend = SamplerBackend(
    sampler, tokenizer, prompting or Prompting(), key=jax.random.key(0) if key is None else key
  ).register(qs)
  return run_batch(SeerSC(n=n, m=m, thresholds=tuple(thresholds)), qs, backend, batch_size=batch_size)


# ------------------------------------------------------------------------------------------------ calibration
def calibrate_thresholds(
  entropies: Sequence[float],
  s2_answers: Sequence[Sequence[str | None]],
  s2_tokens: Sequence[Sequence[int]],
  golds: Sequence[str],
  n: int,
  *,
  tolerance: float = 0.01,
  grid: Sequence[float] | None = None,
) -> dict[str, Any]:
  """Pick (t1, t2) on a development split: the pair with the fewest System-2 tokens whose accuracy is within
  ``tolerance`` of SC@N's, where a query with budget B votes over its first B System-2 samples.

  Args:
    entropies: [Q] System-1 entropies.
    s2_answers: [Q][>= N] System-2 answers (normalised) in stream order.
    s2_tokens: [Q][>= N] their token counts.
    golds: [Q] gold answers.
    n: the configured N.
    tolerance: allowed accuracy drop vs SC@N (fraction, 0.01 = 1 point).
    grid: candidate thresholds (default 0, 0.1, ..., 4.0 bits).

  Returns {"thresholds", "accuracy", "s2_tokens", "sc_accuracy", "sc_s2_tokens"}.
  """
  n = _check_n(n)
  Q = len(entropies)
  if not (len(s2_answers) == len(s2_tokens) == len(golds) == Q) or Q == 0:
    raise ValueError("entropies, s2_answers, s2_tokens and golds must be non-empty and of equal length")
  if any(len(a) < n or len(t) < n for a, t in zip(s2_answers, s2_tokens)):
    raise ValueError(f"every query needs >= N={n} System-2 samples")
  grid = np.round(np.arange(0, 4.01, 0.1), 6) if grid is None else np.asarray(sorted(grid), float)
  grid = np.append(grid, np.inf)  # t = inf gives every query budget N, i.e. SC@N: a feasible pair always exists
  gold = [normalize(g) for g in golds]
  levels = sorted({1, max(1, n // 2), n})
  correct = {b: np.array([majority_vote(list(a[:b])) == g for a, g in zip(s2_answers, gold)]) for b in levels}
  cost = {b: np.array([sum(t[:b]) for t in s2_tokens]) for b in levels}
  e = np.asarray(entropies, float)
  sc_acc, sc_tok = float(correct[n].mean()), int(cost[n].sum())
  best = None
  for i, t1 in enumerate(grid):
    for t2 in grid[i:]:
      b = np.where(e < t1, 1, np.where(e < t2, max(1, n // 2), n))
      acc = float(np.mean([correct[int(x)][q] for q, x in enumerate(b)]))
      tok = int(sum(cost[int(x)][q] for q, x in enumerate(b)))
      if acc >= sc_acc - tolerance - 1e-12 and (best is None or tok < best[2]):
        best = ((float(t1), float(t2)), acc, tok)
  thr, acc, tok = best
  return {"thresholds": thr, "accuracy": acc, "s2_tokens": tok, "sc_accuracy": sc_acc, "sc_s2_tokens": sc_tok}


def calibrate(
  queries: Sequence[Query],
  backend: Backend,
  n: int,
  *,
  m: int = 64,
  policy: str = "avg2",
  tolerance: float = 0.01,
  batch_size: int | None = None,
  grid: Sequence[float] | None = None,
) -> dict[str, Any]:
  """Calibrate SeerSC's thresholds on development queries (with gold answers): draw M System-1 and N System-2
  samples per query through ``backend``, then ``calibrate_thresholds``. Returns its dict plus the dev
  ``entropies``. Use the thresholds on other queries: ``SeerSC(n, thresholds=out["thresholds"])``."""
  n = _check_n(n)
  if not queries or any(q.gold is None for q in queries):
    raise ValueError("calibration needs development queries with gold answers")
  size = len(queries) if batch_size is None else _check_n(batch_size, "batch_size")
  ent, answers, tokens = [], [], []
  for start in range(0, len(queries), size):
    chunk = queries[start : start + size]
    s1, _ = backend.sample([Request(q.id, 1, m, 0) for q in chunk])
    s2, _ = backend.sample([Request(q.id, 2, n, 0) for q in chunk])
    for a, b in zip(s1, s2):
      ent.append(weighted_entropy([x.answer for x in a], [confidence(x.answer_logprobs, policy) for x in a]))
      answers.append([normalize(x.answer) for x in b])
      tokens.append([x.tokens for x in b])
  out = calibrate_thresholds(ent, answers, tokens, [q.gold for q in queries], n, tolerance=tolerance, grid=grid)
  out["entropies"] = ent
  return out


__all__ = [
  "ASC",
  "ESC",
  "GPQA_THRESHOLDS",
  "MATH_THRESHOLDS",
  "SC",
  "Backend",
  "CallStats",
  "Policy",
  "Prompting",
  "Query",
  "QueryRecord",
  "Request",
  "RunReport",
  "Sample",
  "SamplerBackend",
  "ScriptedBackend",
  "SeerSC",
  "asc_probability",
  "budget",
  "calibrate",
  "calibrate_thresholds",
  "confidence",
  "majority_vote",
  "run_batch",
  "seersc",
  "weighted_entropy",
]
