"""Backends the scheduler calls: ``ScriptedBackend`` (tests), ``SamplerBackend`` over a jaxeff ``Sampler`` with its
``Prompting`` (System-1 answer prefix, System-2 reasoning)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from jaxeff.generation.answers import get_extractor
from jaxeff.generation.seersc.policies import CallStats, Query, Request, Sample


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
