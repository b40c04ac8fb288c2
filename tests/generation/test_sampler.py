"""The batched sampler against independent oracles: NumPy sampling rules, teacher-forced logprobs,
one-prompt-at-a-time greedy runs, and exact accounting."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxeff.config import ModelConfig
from jaxeff.generation import Sampler, SamplingParams, sample_logits
from jaxeff.models import forward, init_params


def numpy_sampling_distribution(logits, temperature, top_k, top_p):
  """The distribution the sampler should draw from, written plainly."""
  l = logits.astype(np.float64) / temperature
  order = np.argsort(-l, kind="stable")
  keep = np.ones_like(l, bool)
  if top_k:
    keep[order[top_k:]] = False
  p = np.exp(l - l[keep].max()) * keep
  p /= p.sum()
  if top_p < 1.0:
    cum = 0.0
    nucleus = np.zeros_like(keep)
    for i in order:
      if not keep[i]:
        continue
      if cum < top_p:
        nucleus[i] = True
      cum += p[i]
    keep &= nucleus
    p = np.exp(l - l[keep].max()) * keep
    p /= p.sum()
  return p


@pytest.mark.parametrize("temperature, top_k, top_p", [(1.0, 0, 1.0), (0.7, 5, 1.0), (1.3, 0, 0.6), (1.0, 6, 0.8)])
def test_sample_logits_matches_numpy_distribution(temperature, top_k, top_p):
  logits = np.random.RandomState(0).randn(12).astype(np.float32) * 2
  want = numpy_sampling_distribution(logits, temperature, top_k, top_p)
  n = 20000
  batch = jnp.broadcast_to(jnp.asarray(logits), (n, 12))
  tok, raw_lp, slp = sample_logits(batch, jax.random.key(3), temperature=temperature, top_k=top_k, top_p=top_p)
  tok = np.asarray(tok)
  freq = np.bincount(tok, minlength=12) / n
  assert set(np.flatnonzero(freq)) <= set(np.flatnonzero(want))  # never outside the allowed set
  np.testing.assert_allclose(freq, want, atol=0.015)
  np.testing.assert_allclose(np.asarray(slp), np.log(want[tok]), atol=1e-5)
  raw = logits - np.log(np.exp(logits.astype(np.float64)).sum())
  np.testing.assert_allclose(np.asarray(raw_lp), raw[tok], atol=1e-5)


def test_greedy_is_argmax():
  logits = jnp.asarray(np.random.RandomState(1).randn(5, 30), jnp.float32)
  tok, lp, slp = sample_logits(logits, jax.random.key(0), temperature=0.0)
  np.testing.assert_array_equal(np.asarray(tok), np.argmax(np.asarray(logits), -1))
  assert np.all(np.asarray(slp) == 0)


@pytest.fixture(scope="module")
def model():
  cfg = ModelConfig.tiny(vocab_size=64, eos_token_id=None, bos_token_id=None, pad_token_id=None)
  return cfg, init_params(cfg, jax.random.key(0), std=0.3)


PROMPTS = [[3, 9, 27, 17, 51, 2, 8, 33, 12, 1, 5, 60, 44, 21, 7, 30, 19], [4, 5], [10, 11, 12, 13, 14]]


def test_batched_greedy_equals_one_prompt_at_a_time(model):
  cfg, params = model
  sampler = Sampler(cfg, params)
  sp = SamplingParams(max_new_tokens=9, temperature=0.0, n_samples=3)
  batched = sampler.generate(PROMPTS, sp, jax.random.key(0))
  for b, p in enumerate(PROMPTS):
    alone = sampler.generate([p], sp, jax.random.key(5))
    for s in range(3):  # greedy: the n samples of one prompt coincide
      np.testing.assert_array_equal(batched.tokens[b, s], alone.tokens[0, 0])
    np.testing.assert_allclose(batched.logprobs[b, 0], alone.logprobs[0, 0], atol=1e-5)


def test_decode_rows_are_padded_to_small_buckets_and_padding_changes_nothing(model):
  # A batch-1 decode runs one row (not eight dead-padded ones); 3 rows run as 4, 9 as 16.
  from jaxeff.generation.sampler import _row_bucket

  assert [_row_bucket(n) for n in (1, 2, 3, 4, 5, 8, 9, 16, 17)] == [1, 2, 4, 4, 8, 8, 16, 16, 24]
  cfg, params = model
  sampler = Sampler(cfg, params)
  sp = SamplingParams(max_new_tokens=6, temperature=0.0)
  one = sampler.generate(PROMPTS[:1], sp, jax.random.key(0))
  rows = {k[2] for k in sampler._compiled}
  assert rows == {1}, rows
  nine = sampler.generate(PROMPTS[:1] * 9, sp, jax.random.key(0))  # 9 live rows padded to 16
  assert {k[2] for k in sampler._compiled} == {1, 16}
  for b in range(9):
    np.testing.assert_array_equal(nine.tokens[b, 0], one.tokens[0, 0])
    np.testing.assert_allclose(nine.logprobs[b, 0], one.logprobs[0, 0], atol=1e-5)


def test_logprobs_equal_teacher_forced_log_softmax(model):
  cfg, params = model
  res = Sampler(cfg, params).generate(
    PROMPTS, SamplingParams(max_new_tokens=8, temperature=1.0, n_samples=2), jax.random.key(1)
  )
  for b, p in enumerate(PROMPTS):
    for s in range(2):
      gen = res.tokens[b, s].tolist()
      seq = jnp.asarray([p + gen])
      logits, _ = forward(params, seq, jnp.arange(seq.shape[1])[None], config=cfg)
      lp = jax.nn.log_softmax(logits[0], -1)
      want = np.asarray(lp[len(p) - 1 : -1])[np.arange(len(gen)), gen]
      np.testing.assert_allclose(res.logprobs[b, s], want, atol=2e-5)
      # temperature 1 without truncation: the sampling distribution is the model's
      np.testing.assert_allclose(res.sample_logprobs[b, s], want, atol=2e-5)


def test_deterministic_in_key_and_samples_differ(model):
  cfg, params = model
  sampler = Sampler(cfg, params)
  sp = SamplingParams(max_new_tokens=10, temperature=1.0, n_samples=4)
  a = sampler.generate(PROMPTS, sp, jax.random.key(7))
  b = sampler.generate(PROMPTS, sp, jax.random.key(7))
  c = sampler.generate(PROMPTS, sp, jax.random.key(8))
  np.testing.assert_array_equal(a.tokens, b.tokens)
  assert not np.array_equal(a.tokens, c.tokens)
  assert len({tuple(a.tokens[0, s]) for s in range(4)}) > 1  # n samples are independent draws


def test_stop_tokens_and_accounting(model):
  cfg, params = model
  sampler = Sampler(cfg, params)
  greedy = sampler.generate(PROMPTS, SamplingParams(max_new_tokens=8, temperature=0.0), jax.random.key(0))
  stop = int(greedy.tokens[0, 0, 3])
  first = [
    int(np.flatnonzero(greedy.tokens[b, 0] == stop)[0]) + 1 if stop in greedy.tokens[b, 0] else 8 for b in range(3)
  ]
  res = sampler.generate(
    PROMPTS, SamplingParams(max_new_tokens=8, temperature=0.0, stop_tokens=(stop,), pad_id=63), jax.random.key(0)
  )
  np.testing.assert_array_equal(res.lengths[:, 0], first)
  for b in range(3):
    L = first[b]
    np.testing.assert_array_equal(res.tokens[b, 0, :L], greedy.tokens[b, 0, :L])
    assert np.all(res.tokens[b, 0, L:] == 63) and np.all(res.logprobs[b, 0, L:] == 0)
    assert res.stopped[b, 0] == (stop in greedy.tokens[b, 0])
  a = res.accounting
  assert a.prompt_tokens == sum(map(len, PROMPTS))
  assert a.generated_tokens == int(res.lengths.sum())
  assert a.decode_calls == max(first) - 1
  assert a.prefill_s > 0 and a.decode_s > 0
  assert a.compile_s > 0  # new stop set = new static sampling params = a fresh compile, reported apart
  again = sampler.generate(
    PROMPTS, SamplingParams(max_new_tokens=8, temperature=0.0, stop_tokens=(stop,), pad_id=63), jax.random.key(0)
  )
  assert again.accounting.compile_s == 0.0


def test_bad_input_is_rejected_before_work(model):
  cfg, params = model
  sampler = Sampler(cfg, params)
  sp = SamplingParams(max_new_tokens=4)
  with pytest.raises(ValueError, match="prompt 1 is empty"):
    sampler.generate([[1], []], sp, jax.random.key(0))
  with pytest.raises(ValueError, match="exceeds the model's maximum"):
    sampler.generate([[1] * (cfg.max_position_embeddings - 2)], sp, jax.random.key(0))
  with pytest.raises(ValueError, match="outside"):
    sampler.generate([[1, 999]], sp, jax.random.key(0))
  nan, inf = float("nan"), float("inf")
  bads = [dict(max_new_tokens=0), dict(temperature=-1.0), dict(temperature=nan), dict(temperature=inf)]
  bads += [dict(top_p=0.0), dict(top_p=nan), dict(top_k=-2), dict(n_samples=0)]
  for bad in bads:
    with pytest.raises(ValueError, match="invalid SamplingParams"):
      SamplingParams(**bad)


def test_samples_do_not_depend_on_batch_composition(model):
  """Per-row keys: sample s of prompt id p is the same draw alone, in another batch, or asked for later."""
  cfg, params = model
  sampler = Sampler(cfg, params)
  sp = SamplingParams(max_new_tokens=7, temperature=1.0, n_samples=4)
  full = sampler.generate(PROMPTS, sp, jax.random.key(3), prompt_ids=[10, 11, 12])
  # prompt 12 alone, samples 2..3 only (a sequential method's later request)
  later = sampler.generate([PROMPTS[2]], sp, jax.random.key(3), n=[2], prompt_ids=[12], first_sample=[2])
  np.testing.assert_array_equal(later.tokens[0], full.tokens[2, 2:])
  np.testing.assert_allclose(later.logprobs[0], full.logprobs[2, 2:], atol=1e-5)
  # ragged counts in one batch: (0, 3, 1) samples; the absent ones have length 0 and the total counts only rows
  rag = sampler.generate(PROMPTS, sp, jax.random.key(3), n=[0, 3, 1], prompt_ids=[10, 11, 12])
  assert rag.tokens.shape == (3, 3, 7)
  np.testing.assert_array_equal(rag.tokens[1], full.tokens[1, :3])
  np.testing.assert_array_equal(rag.tokens[2, 0], full.tokens[2, 0])
  assert np.all(rag.lengths[0] == 0) and np.all(rag.lengths[2, 1:] == 0)
  assert rag.accounting.generated_tokens == int(rag.lengths.sum())
  assert rag.accounting.prompt_tokens == len(PROMPTS[1]) + len(PROMPTS[2])  # prompt 0 asked for nothing
  with pytest.raises(ValueError, match="invalid generate arguments"):
    sampler.generate(PROMPTS, sp, jax.random.key(3), n=[0, 0, 0])
  with pytest.raises(ValueError, match="invalid generate arguments"):
    sampler.generate(PROMPTS, sp, jax.random.key(3), n=[1, 2])
