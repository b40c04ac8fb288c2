"""One batch scheduler for every policy: each round is one batched model call for every query still running; the
per-query records and the run report (tokens, calls, latency)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from jaxeff.generation.answers import normalize
from jaxeff.generation.seersc.policies import Backend, CallStats, Method, Query, Request
from jaxeff.generation.seersc.scores import _check_n


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
    >>> from jaxeff.generation.seersc import SC, ScriptedBackend
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
