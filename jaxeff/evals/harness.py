"""Run any prefill backend + cache factory (a ``Stack``, a ``Press``, CommonKV, int4) on long-context examples.

Two protocols (``PROTOCOLS``):

* ``aware`` (RULER's): the whole prompt (context + question) is prefilled, compressed right after prefill,
  then the answer is decoded greedily through the cache.
* ``agnostic`` (kvpress's; the setting Judge Q targets): only the context is prefilled and compressed, before
  the question is seen; the question is then fed through the compressed cache token by token (teacher forced)
  and the answer decoded greedily after it.

One jitted function per (cache factory, prefill backend, shapes) runs the prefill and a ``lax.scan`` over the
question and answer steps. Contexts are right-padded to the cell's longest (position -1), so every example of a
cell shares one compilation. ``DensePrefill`` shares one dense prefill between every method that compresses
after a dense prefill (the eviction presses, int8/int4): the per-layer keys, values and queries of the prefill
are recorded once and replayed into each method's cache, which is exact because prefill attention does not read
the cache (``tests/evals``: replay == a direct prefill, token for token).

Scores: ``tasks.score`` per example; ``summarize`` gives each cell's mean (in points, 0-100), n and a bootstrap
95 % interval; ``paired_difference`` compares two methods on the same examples.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from jaxeff.config import ModelConfig
from jaxeff.evals.tasks import Example, score
from jaxeff.kvcache.base import FullCache
from jaxeff.models.cache import after_prefill, changes_prefill, prefill_with
from jaxeff.models.decoder import forward

PROTOCOLS = ("aware", "agnostic")


@dataclasses.dataclass(frozen=True)
class Method:
  """A row of an evaluation: a name, the params it runs on, its cache factory and its prefill backend."""

  name: str
  params: Any
  factory: Any = FullCache
  attention: Any = None

  @classmethod
  def from_stack(cls, name: str, stack, config: ModelConfig, params: Any) -> Method:
    """The method of a ``jaxeff.stack.Stack`` (CommonKV factorises the params here, once)."""
    p, factory = stack.prepare(config, params)
    return cls(name, p, factory, stack.attention)


# ------------------------------------------------------------------------------------------- inputs
def _split(examples: Sequence[Example], protocol: str):
  """(prefill token lists, feed token lists): the feed is the question in the question-agnostic protocol."""
  if protocol not in PROTOCOLS:
    raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
  if protocol == "aware":
    return [ex.prompt for ex in examples], [[] for _ in examples]
  return [list(ex.context) for ex in examples], [list(ex.question) for ex in examples]


def _feed_width(examples: Sequence[Example], protocol: str, feed_pad: int) -> int:
  """The feed width F: the longest feed of ``examples`` rounded up to a multiple of ``feed_pad`` (at least 1)."""
  feed = _split(examples, protocol)[1]
  return max(1, -(-max(len(f) for f in feed) // feed_pad) * feed_pad)


def _pad_inputs(examples: Sequence[Example], protocol: str, feed_pad: int, F: int | None = None):
  """(prefill tokens [B, P], prefill positions [B, P], feed tokens [B, F], feed lengths [B], prefill lengths [B]).

  The feed (the question, question-agnostic protocol only) is right-padded to ``F`` (default: the batch's
  ``_feed_width``)."""
  pre, feed = _split(examples, protocol)
  P = max(ex.length for ex in examples)
  F = F or _feed_width(examples, protocol, feed_pad)
  B = len(examples)
  toks = np.zeros((B, P), np.int32)
  pos = np.full((B, P), -1, np.int32)
  fd = np.zeros((B, F), np.int32)
  for b, (p, f) in enumerate(zip(pre, feed)):
    toks[b, : len(p)], pos[b, : len(p)] = p, np.arange(len(p))
    fd[b, : len(f)] = f
  return toks, pos, fd, np.array([len(f) for f in feed], np.int32), np.array([len(p) for p in pre], np.int32)


def _decode(params, config: ModelConfig, cache, first_pred, feed, n_feed, lengths, steps: int):
  """Scan ``steps`` one-token steps: input = feed[t] while t < n_feed, else the previous prediction."""
  B = feed.shape[0]

  def step(carry, t):
    cache, prev = carry
    inp = jnp.where(t < n_feed, feed[jnp.arange(B), jnp.minimum(t, feed.shape[1] - 1)], prev)
    lg, cache = forward(params, inp[:, None], (lengths + t)[:, None], cache, config=config, is_prefill=False)
    pred = jnp.argmax(lg[:, 0, : config.vocab_size], -1).astype(jnp.int32)
    return (cache, pred), pred

  (_, _), preds = jax.lax.scan(step, (cache, first_pred), jnp.arange(steps))
  return preds.T  # [B, steps]: preds[:, t] follows input t


def _answers(first_pred, preds, n_feed, new: int) -> np.ndarray:
  """Generated tokens [B, new]: after the prefill when there is no feed, else after the last feed token."""
  first_pred, preds, n_feed = np.asarray(first_pred), np.asarray(preds), np.asarray(n_feed)
  out = np.zeros((len(n_feed), new), np.int32)
  for b, f in enumerate(n_feed):
    out[b] = np.concatenate([[first_pred[b]], preds[b, : new - 1]]) if f == 0 else preds[b, f - 1 : f - 1 + new]
  return out


@functools.lru_cache(maxsize=64)
def _runner(config: ModelConfig, factory: Any, attention: Any, B: int, P: int, F: int, new: int):
  steps = F + new - 1

  @jax.jit
  def run(params, toks, pos, feed, n_feed, lengths):
    logits, cache = prefill_with(
      factory, params, toks, pos, config=config, max_len=P + F + new, attention=attention, logits_index=lengths - 1
    )
    first = jnp.argmax(logits[:, 0, : config.vocab_size], -1).astype(jnp.int32)
    return first, _decode(params, config, cache, first, feed, n_feed, lengths, steps)

  return run


# --------------------------------------------------------------------------------- shared dense prefill
@flax.struct.dataclass
class _Recorder:
  """A cache that records each layer's prefill keys, values and queries (to replay into other caches)."""

  k: tuple
  v: tuple
  q: tuple

  def prefill(self, layer, k_btkh, v_btkh, positions_bt, *, q=None, **_):
    return _Recorder(self.k + (k_btkh,), self.v + (v_btkh,), self.q + (q,))


@functools.lru_cache(maxsize=8)
def _record_fn(config: ModelConfig):
  @jax.jit
  def record(params, toks, pos, lengths):
    logits, rec = forward(
      params, toks, pos, _Recorder((), (), ()), config=config, is_prefill=True, logits_index=lengths - 1
    )
    return jnp.argmax(logits[:, 0, : config.vocab_size], -1).astype(jnp.int32), rec

  return record


@functools.lru_cache(maxsize=64)
def _replay_fn(config: ModelConfig, factory: Any, B: int, P: int, F: int, new: int):
  steps = F + new - 1

  @jax.jit
  def replay(params, rec, first, pos, feed, n_feed, lengths):
    cache = factory.init(config, B, P + F + new)
    for i in range(config.n_layers):
      cache = cache.prefill(i, rec.k[i], rec.v[i], pos, q=rec.q[i])
    cache = after_prefill(factory, cache, max_new_tokens=F + new)
    return _decode(params, config, cache, first, feed, n_feed, lengths, steps)

  return replay


def shares_dense_prefill(method: Method, base_params: Any) -> bool:
  """Whether ``method`` compresses after an ordinary dense prefill of ``base_params`` (so it can replay one)."""
  return (
    method.params is base_params
    and method.attention is None
    and not changes_prefill(method.factory)  # Judge Q's soft tokens change the prefill
  )


# ------------------------------------------------------------------------------------------- running
def run_methods(
  config: ModelConfig,
  base_params: Any,
  methods: Sequence[Method],
  examples: Sequence[Example],
  tokenizer,
  *,
  protocol: str = "aware",
  batch_size: int = 1,
  feed_pad: int = 16,
  progress: Callable[[str], None] | None = None,
  on_batch: Callable[[dict[str, list[dict]]], None] | None = None,
) -> dict[str, list[dict]]:
  """Run every method on every example (same examples for every method); returns ``{method: [record, ...]}``.
  ``on_batch`` receives each batch's new records ``{method: [record, ...]}`` as soon as the batch is done (a
  long run can save them and resume from the last finished batch).

  A record is ``{task, length, index, score, prediction, tokens, seconds}`` (``tokens``: the answer's ids up to
  the first stop token). Methods that compress after a dense
  prefill of ``base_params`` (``shares_dense_prefill``) replay one recorded prefill per batch; the others run
  their own prefill. ``seconds`` is the wall time of the method on that batch divided by its size (compile
  time included on the first batch of each shape). Every batch has one shape (the feed is padded to the longest
  of all ``examples``, a short last batch is filled with copies of its last example whose outputs are dropped),
  so each method compiles once per call.

  Example:
    >>> recs = run_methods(cfg, params, [Method("dense", params)], exs, tok)  # doctest: +SKIP
  """
  if not examples:
    raise ValueError("no examples to run")
  new = max(ex.max_new_tokens for ex in examples)
  stops = set(int(t) for t in (config.stop_token_ids or ()))
  out: dict[str, list[dict]] = {m.name: [] for m in methods}
  shared = [m for m in methods if shares_dense_prefill(m, base_params)]
  own = [m for m in methods if m not in shared]
  F_all = _feed_width(examples, protocol, feed_pad)
  for a in range(0, len(examples), batch_size):
    real = list(examples[a : a + batch_size])
    batch = real + [real[-1]] * (min(batch_size, len(examples)) - len(real))  # one batch shape for the call
    toks, pos, feed, n_feed, lengths = _pad_inputs(batch, protocol, feed_pad, F_all)
    B, P = toks.shape
    F = feed.shape[1]
    args = [jnp.asarray(x) for x in (feed, n_feed, lengths)]
    if shared:
      t0 = time.perf_counter()
      first, rec = _record_fn(config)(base_params, jnp.asarray(toks), jnp.asarray(pos), args[2])
      jax.block_until_ready(first)
      t_prefill = time.perf_counter() - t0
      for m in shared:
        t0 = time.perf_counter()
        preds = _replay_fn(config, m.factory, B, P, F, new)(m.params, rec, first, jnp.asarray(pos), *args)
        gen = _answers(first, jax.block_until_ready(preds), n_feed, new)
        _collect(out[m.name], real, gen, tokenizer, stops, (time.perf_counter() - t0 + t_prefill) / len(real))
      del rec
    for m in own:
      t0 = time.perf_counter()
      run = _runner(config, m.factory, m.attention, B, P, F, new)
      first, preds = run(m.params, jnp.asarray(toks), jnp.asarray(pos), *args)
      gen = _answers(first, jax.block_until_ready(preds), n_feed, new)
      _collect(out[m.name], real, gen, tokenizer, stops, (time.perf_counter() - t0) / len(real))
    if on_batch is not None:
      on_batch({name: recs[-len(real) :] for name, recs in out.items()})
    if progress is not None:
      progress(f"{min(a + batch_size, len(examples))}/{len(examples)}")
  return out


def _collect(records, batch, gen, tokenizer, stops, seconds):
  for ex, row in zip(batch, gen):
    ids = [int(t) for t in row]
    cut = next((i for i, t in enumerate(ids) if t in stops), len(ids))
    text = tokenizer.decode(ids[:cut])
    records.append(
      dict(
        task=ex.task,
        length=ex.length,
        index=ex.index,
        score=score(text, ex.references, ex.metric),
        prediction=text,
        tokens=ids[:cut],
        seconds=seconds,
      )
    )


# ------------------------------------------------------------------------------------------- statistics
def bootstrap_ci(values: Sequence[float], *, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05):
  """Percentile bootstrap interval of the mean: ``(mean, lo, hi)``.

  Example:
    >>> bootstrap_ci([1.0, 1.0, 1.0])
    (1.0, 1.0, 1.0)
  """
  v = np.asarray(values, np.float64)
  if v.size == 0:
    raise ValueError("bootstrap_ci needs at least one value")
  rng = np.random.default_rng(seed)
  means = v[rng.integers(0, v.size, (n_boot, v.size))].mean(1)
  lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
  return float(v.mean()), float(lo), float(hi)


def paired_difference(a: Sequence[float], b: Sequence[float], **kw):
  """Mean of ``a - b`` over the same examples with its bootstrap 95 % interval: ``(diff, lo, hi)``."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape:
    raise ValueError(f"paired_difference needs the same examples, got {a.shape} and {b.shape}")
  return bootstrap_ci(a - b, **kw)


def summarize(records: dict[str, list[dict]], *, seed: int = 0) -> list[dict]:
  """One row per (method, task, length): score mean in points with bootstrap 95 % interval, n, s/example."""
  rows = []
  for name, recs in records.items():
    cells: dict[tuple, list[dict]] = {}
    for r in recs:
      cells.setdefault((r["task"], r["length"]), []).append(r)
    for (task, length), rs in sorted(cells.items()):
      m, lo, hi = bootstrap_ci([r["score"] for r in rs], seed=seed)
      rows.append(
        dict(
          method=name,
          task=task,
          length=length,
          n=len(rs),
          score=100 * m,
          lo=100 * lo,
          hi=100 * hi,
          seconds=float(np.median([r["seconds"] for r in rs])),
        )
      )
  return rows


def format_table(rows: Sequence[dict]) -> str:
  """A plain-text table of ``summarize`` rows."""
  lines = [f"{'method':<28} {'task':<16} {'len':>6} {'n':>4} {'score':>7}  {'95% CI':<15} {'s/ex':>6}"]
  for r in rows:
    ci = f"[{r['lo']:.1f}, {r['hi']:.1f}]"
    lines.append(
      f"{r['method']:<28} {r['task']:<16} {r['length']:>6} {r['n']:>4} {r['score']:>7.1f}  {ci:<15} {r['seconds']:>6.2f}"
    )
  return "\n".join(lines)


@dataclasses.dataclass(eq=False)
class Metered:
  """A block-sparse prefill backend that also records the density of every mask it builds.

  ``densities`` collects one value per (layer, call): kept / causal key blocks over the real query blocks
  (``BlockSparseMask.density``), through ``jax.debug.callback`` so it works under ``jit``. Rows are assumed to
  be in jaxeff's prefill layout (valid tokens first); prompts too short for blocks go to dense attention and
  record nothing.

  Example:
    >>> from jaxeff.attention import ProxyAttention
    >>> meter = Metered(ProxyAttention(block_size=64, min_budget_tokens=128))  # doctest: +SKIP
  """

  inner: Any
  densities: list = dataclasses.field(default_factory=list)

  def __call__(self, q_btnh, k_bskh, v_bskh, q_pos_bt, k_pos_bs, *, window=None, layer=0):
    T, S = q_btnh.shape[1], k_bskh.shape[1]
    if T != S or window is not None or T <= max(self.inner.block_size, self.inner.dense_below):
      return self.inner(q_btnh, k_bskh, v_bskh, q_pos_bt, k_pos_bs, window=window, layer=layer)
    lengths = jnp.maximum((k_pos_bs >= 0).sum(-1), 1).astype(jnp.int32)
    t = lambda x: x.transpose(0, 2, 1, 3)
    out, m = self.inner.attend(t(q_btnh), t(k_bskh), t(v_bskh), lengths)
    jax.debug.callback(lambda d: self.densities.append(float(d)), m.density(lengths))
    return t(out)
