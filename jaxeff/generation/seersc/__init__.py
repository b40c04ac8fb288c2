r"""SeerSC: entropy-budgeted self-consistency, with SC, ESC and ASC run by one batch scheduler.

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

Layout: ``scores`` (confidence, entropy, budget, votes), ``policies`` (``SC``, ``ESC``, ``ASC``, ``SeerSC``),
``scheduler`` (``run_batch``, the records), ``backends`` (``ScriptedBackend``, ``SamplerBackend``, ``Prompting``),
``calibration`` (thresholds); this module re-exports them and holds the text-prompt entry ``seersc``.
"""

from __future__ import annotations

from collections.abc import Sequence

from jaxeff.generation.answers import normalize as normalize
from jaxeff.generation.seersc.backends import Prompting, SamplerBackend, ScriptedBackend
from jaxeff.generation.seersc.calibration import calibrate, calibrate_thresholds
from jaxeff.generation.seersc.policies import ASC, ESC, SC, Backend, CallStats, Policy, Query, Request, Sample, SeerSC
from jaxeff.generation.seersc.scheduler import QueryRecord, RunReport, run_batch
from jaxeff.generation.seersc.scores import (
  CONFIDENCE_POLICIES,
  GPQA_THRESHOLDS,
  MATH_THRESHOLDS,
  asc_probability,
  budget,
  confidence,
  majority_vote,
  weighted_entropy,
)


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


__all__ = [
  "ASC",
  "CONFIDENCE_POLICIES",
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
