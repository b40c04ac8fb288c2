"""The protocols against independent oracles: an uncached greedy loop, full budget = full cache, and the shared
dense prefill replayed into each cache = that cache's own prefill."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxeff.config import ModelConfig
from jaxeff.evals import Method, bootstrap_ci, make_examples, paired_difference, run_methods, summarize
from jaxeff.kvcache.eviction import Press
from jaxeff.kvcache.quantized import Quantized
from jaxeff.models import forward, init_params
from jaxeff.tokenizer import ByteTokenizer


@pytest.fixture(scope="module")
def setup():
  cfg = ModelConfig.tiny()
  params = init_params(cfg, jax.random.key(3))
  tok = ByteTokenizer()
  exs = make_examples(tok, "niah_single", 512, 3, seed=2) + make_examples(tok, "niah_multikey", 700, 1, seed=2)
  return cfg, params, tok, exs


def _greedy_uncached(params, cfg, prompt, new):
  """Greedy decoding by a full causal forward over a fixed buffer at every step (no cache at all)."""
  P = len(prompt)
  buf = np.zeros((1, P + new), np.int32)
  buf[0, :P] = prompt
  fn = jax.jit(
    lambda p, x, i: jnp.argmax(forward(p, x, jnp.arange(P + new)[None], config=cfg)[0][0, i, : cfg.vocab_size])
  )
  for t in range(new):
    buf[0, P + t] = int(fn(params, jnp.asarray(buf), P + t - 1))
  return buf[0, P:].tolist()


@pytest.mark.parametrize("batch_size", [2, 3])  # 3: a short last batch, filled with copies that are dropped
def test_both_protocols_equal_an_uncached_greedy_loop_with_a_full_cache(setup, batch_size):
  cfg, params, tok, exs = setup
  new = max(e.max_new_tokens for e in exs)
  stops = set(cfg.stop_token_ids)
  wants = []
  for ex in exs:
    want = _greedy_uncached(params, cfg, ex.prompt, new)
    wants.append(want[: next((i for i, t in enumerate(want) if t in stops), len(want))])
  for protocol in ("aware", "agnostic"):
    batches = []
    recs = run_methods(
      cfg,
      params,
      [Method("full", params)],
      exs,
      tok,
      protocol=protocol,
      batch_size=batch_size,
      on_batch=batches.append,
    )
    assert [r["tokens"] for r in recs["full"]] == wants, protocol
    assert [r["index"] for r in recs["full"]] == [e.index for e in exs]
    # each batch's records handed over as it finishes (what the benchmark saves to resume mid-cell)
    assert [len(b["full"]) for b in batches] == [len(exs[a : a + batch_size]) for a in range(0, len(exs), batch_size)]
    assert [r for b in batches for r in b["full"]] == recs["full"]


def test_full_budget_press_is_the_full_cache_and_small_budgets_differ(setup):
  cfg, params, tok, exs = setup
  ms = [
    Method("full", params),
    Method("snap1", params, Press("snapkv", budget=1.0)),
    Method("snap", params, Press("streaming", budget=0.05)),
  ]
  recs = run_methods(cfg, params, ms, exs, tok, protocol="agnostic")
  assert [r["tokens"] for r in recs["snap1"]] == [r["tokens"] for r in recs["full"]]
  assert [r["tokens"] for r in recs["snap"]] != [r["tokens"] for r in recs["full"]]


def test_shared_dense_prefill_replay_equals_each_caches_own_prefill(setup):
  cfg, params, tok, exs = setup
  copy = jax.tree.map(lambda a: a, params)  # a different object: no method shares the recorded prefill
  for protocol in ("aware", "agnostic"):
    mk = lambda p: [
      Method("snapkv", p, Press("snapkv", budget=0.2)),
      Method("int8", p, Quantized(bits=8)),
    ]
    shared = run_methods(cfg, params, mk(params), exs, tok, protocol=protocol, batch_size=2)
    own = run_methods(cfg, copy, mk(params), exs, tok, protocol=protocol, batch_size=2)
    for name in shared:
      assert [r["tokens"] for r in shared[name]] == [r["tokens"] for r in own[name]], (protocol, name)


def test_statistics():
  assert bootstrap_ci([0.0, 0.0]) == (0.0, 0.0, 0.0)
  m, lo, hi = bootstrap_ci([0, 1] * 50, seed=1)
  assert m == 0.5 and 0.35 < lo < 0.5 < hi < 0.65
  assert paired_difference([1, 0, 1], [1, 0, 1]) == (0.0, 0.0, 0.0)
  d, lo, hi = paired_difference([1, 1, 1, 1], [0, 0, 1, 1])
  assert d == 0.5 and lo >= 0.0 and hi <= 1.0
  with pytest.raises(ValueError):
    paired_difference([1, 0], [1])
  rows = summarize(
    {"a": [dict(task="t", length=8, index=i, score=s, seconds=1.0) for i, s in enumerate([1, 0, 1, 1])]}
  )
  assert rows[0]["n"] == 4 and rows[0]["score"] == 75.0 and rows[0]["lo"] <= 75.0 <= rows[0]["hi"]


def test_bad_protocol_raises(setup):
  cfg, params, tok, exs = setup
  with pytest.raises(ValueError, match="protocol"):
    run_methods(cfg, params, [Method("full", params)], exs, tok, protocol="blind")
  with pytest.raises(ValueError, match="no examples"):
    run_methods(cfg, params, [Method("full", params)], [], tok)
