"""The composed stack (ProxyAttn prefill + CommonKV latents + Judge Q eviction + int4, dense or CAMERA-compacted
MoE) in one generate call: with the other pieces at their identity settings it equals each piece alone."""

import jax
import numpy as np
import pytest

from jaxeff.attention import ProxyAttention
from jaxeff.config import ModelConfig
from jaxeff.generation import Sampler, SamplingParams
from jaxeff.kvcache import CommonKV, FullCache, Quantized, compress
from jaxeff.kvcache.commonkv import max_group_rank
from jaxeff.kvcache.judgeq import JudgeQPress, SoftTokens, init_soft
from jaxeff.models import init_params
from jaxeff.stack import Stack

SP = SamplingParams(max_new_tokens=6, temperature=0.0)
PROXY = ProxyAttention(gamma=0.6, block_size=16, min_budget_tokens=16)  # real sparsity at 96 tokens
PROXY_ID = ProxyAttention(gamma=0.6, block_size=16, min_budget_tokens=4096)  # the budget covers every prompt


@pytest.fixture(scope="module")
def dense():
  cfg = ModelConfig.tiny()
  params = init_params(cfg, jax.random.key(0), std=0.3)
  soft = SoftTokens(init_soft(params, 4, seed=1))
  rng = np.random.RandomState(0)
  prompts = [rng.randint(0, 256, 96).tolist(), rng.randint(0, 256, 80).tolist()]
  return cfg, params, soft, prompts


def _run(sampler, prompts):
  r = sampler.generate(prompts, SP, jax.random.key(0))
  return r.tokens, r.logprobs


def _same(a, b, atol=2e-4):
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_allclose(a[1], b[1], atol=atol)


def test_proxyattn_piece(dense):
  """ProxyAttn at a real (sparse) setting, full-rank latents, Judge Q at budget 1.0, no bits == ProxyAttn alone."""
  cfg, params, soft, prompts = dense
  full_rank = max_group_rank(cfg, 2)
  stack = Stack(attention=PROXY, latent_rank=full_rank, press=JudgeQPress(soft, budget=1.0))
  ref = _run(Sampler(cfg, params, attention=PROXY), prompts)
  _same(_run(stack.sampler(cfg, params), prompts), ref)
  # and the sparse prefill really is sparse here: dense differs
  assert not np.allclose(_run(Sampler(cfg, params), prompts)[1], ref[1], atol=2e-4)


def test_commonkv_piece(dense):
  cfg, params, soft, prompts = dense
  stack = Stack(attention=PROXY_ID, latent_rank=24, press=JudgeQPress(soft, budget=1.0))
  _, pc, spec, _ = compress(cfg, params, group_size=2, rank=24, multiple=1)
  _same(_run(stack.sampler(cfg, params), prompts), _run(Sampler(cfg, pc, cache=CommonKV(spec)), prompts))


def test_judgeq_piece(dense):
  cfg, params, soft, prompts = dense
  press = JudgeQPress(soft, budget=0.3, per_head=False)
  stack = Stack(attention=PROXY_ID, latent_rank=max_group_rank(cfg, 2), press=press)
  ref = _run(Sampler(cfg, params, cache=press), prompts)
  _same(_run(stack.sampler(cfg, params), prompts), ref)
  assert not np.allclose(_run(Sampler(cfg, params), prompts)[1], ref[1], atol=2e-4)  # eviction changed something


def test_int4_piece(dense):
  """int4 on the keys/values (no latent) and on the latents (CommonKV on) equal the quantized caches alone."""
  cfg, params, soft, prompts = dense
  stack = Stack(attention=PROXY_ID, press=JudgeQPress(soft, budget=1.0), kv_bits=4, quant_group=16)
  ref = _run(Sampler(cfg, params, cache=Quantized(bits=4, group_size=16)), prompts)
  _same(_run(stack.sampler(cfg, params), prompts), ref)
  stack = Stack(attention=PROXY_ID, latent_rank=24, press=JudgeQPress(soft, budget=1.0), kv_bits=4)
  _, pc, spec, _ = compress(cfg, params, group_size=2, rank=24, multiple=1)
  _same(_run(stack.sampler(cfg, params), prompts), _run(Sampler(cfg, pc, cache=CommonKV(spec, bits=4)), prompts))


def test_everything_on_runs_and_saves_memory(dense):
  cfg, params, soft, prompts = dense
  stack = Stack(attention=PROXY, latent_rank=16, press=JudgeQPress(soft, budget=0.25), kv_bits=4)
  assert stack.describe() == "proxyattn + commonkv(r=16) + judgeq(0.25) + int4"
  out = stack.sampler(cfg, params).generate(prompts[:1], SP, jax.random.key(0))
  assert out.tokens.shape == (1, 1, 6) and np.all(np.isfinite(out.logprobs))
  full = Sampler(cfg, params).generate(prompts[:1], SP, jax.random.key(0)).accounting.cache_bytes
  assert full == FullCache.init(cfg, 1, 96 + 6).nbytes()  # the 96-token prompt + 6 new tokens, full precision
  small = out.accounting.cache_bytes
  assert small < full / 8, (small, full)


def test_camera_compacted_moe_in_the_stack():
  """A CAMERA-compacted MoE runs under the whole stack; at identity settings it equals the compacted model alone,
  and compaction at ratio 0 equals the original model."""
  from jaxeff.moe.camera import camera_prune, compact

  cfg = ModelConfig.tiny(model_type="qwen2_moe", n_experts=4, experts_per_token=2, d_expert=16, d_shared=16)
  params = init_params(cfg, jax.random.key(1), std=0.3)
  calib = np.random.RandomState(0).randint(0, 256, (4, 32))
  rng = np.random.RandomState(1)
  prompts = [rng.randint(0, 256, 64).tolist()]
  pruned, rep = camera_prune(params, cfg, calib, 0.25)
  small = compact(pruned, cfg, rep)
  soft = SoftTokens(init_soft(small, 4, seed=1))
  ident = Stack(attention=PROXY_ID, latent_rank=max_group_rank(cfg, 2), press=JudgeQPress(soft, budget=1.0))
  _same(_run(ident.sampler(cfg, small), prompts), _run(Sampler(cfg, small), prompts))
  zero_p, zero_rep = camera_prune(params, cfg, calib, 0.0)
  _same(_run(Sampler(cfg, compact(zero_p, cfg, zero_rep)), prompts), _run(Sampler(cfg, params), prompts))
  stack = Stack(attention=PROXY, latent_rank=16, press=JudgeQPress(soft, budget=0.25), kv_bits=4)
  out = stack.sampler(cfg, small).generate(prompts, SP, jax.random.key(0))
  assert np.all(np.isfinite(out.logprobs))


@pytest.mark.parametrize(
  "kw, match",
  [
    (dict(latent_rank=8, latent_ratio=0.5), "not both"),
    (dict(latent_ratio=1.5), r"\(0, 1\]"),
    (dict(kv_bits=3), "kv_bits"),
    (dict(press="snapkv"), "Press"),
  ],
)
def test_bad_stack_fails_before_work(kw, match):
  with pytest.raises(ValueError, match=match):
    Stack(**kw)


def test_from_options_builds_what_the_flags_name_and_rejects_contradictions():
  cfg = ModelConfig.tiny()
  s = Stack.from_options(cfg, prefill_attention="proxy", kv_cache="int4", kv_press="h2o", kv_budget=32)
  assert s.kv_bits == 4 and not s.latent and s.press.scorer == "h2o" and s.press.budget == 32
  one = Stack.from_options(cfg, kv_press="snapkv", kv_budget=1).press.budget  # 1 is the whole prompt, not 1 token
  assert one == 1.0 and isinstance(one, float)
  assert type(s.attention).__name__ == "ProxyAttention"
  # without Judge Q's soft tokens after the padding, the sampler's layout has valid tokens first: no packing
  assert s.attention.packing == "assume_in_front"
  assert Stack.from_options(cfg, prefill_attention="xattention").attention.packing == "assume_in_front"
  s = Stack.from_options(cfg, kv_cache="commonkv", kv_rank=8, kv_merge_rho=0.4)
  assert (s.latent_rank, s.latent_ratio, s.latent_merge_rho, s.kv_bits) == (8, None, 0.4, None)
  s = Stack.from_options(cfg, kv_cache="commonkv", kv_bits=4, kv_select_tiles=16)
  assert s.describe() == "dense + commonkv(0.5)+select16 + int4"
  _, factory = s.prepare(cfg, init_params(cfg, jax.random.key(0)))
  assert (factory.select_tiles, factory.bits) == (16, 4)
  with pytest.raises(ValueError, match="latent_select_tiles"):
    Stack.from_options(cfg, kv_cache="commonkv", kv_select_tiles=8, kv_merge_rho=0.4)
  with pytest.raises(ValueError, match="kv-select-tiles"):  # only for latents: an error, not ignored
    Stack.from_options(cfg, kv_select_tiles=8)
  with pytest.raises(ValueError, match="kv_cache must be"):
    Stack.from_options(cfg, kv_cache="int2")
  with pytest.raises(ValueError, match="quantizes CommonKV latents"):
    Stack.from_options(cfg, kv_bits=4)
  with pytest.raises(ValueError, match="judgeq"):
    Stack.from_options(cfg, kv_press="judgeq")


def test_judgeq_press_keeps_the_packing_check(dense, tmp_path):
  """Judge Q appends soft tokens after a padded prompt: with that press the block-sparse backend keeps its
  run-time packing check."""
  cfg, params, soft, prompts = dense
  soft.save(tmp_path / "jq")
  s = Stack.from_options(cfg, prefill_attention="proxy", kv_press="judgeq", judgeq=str(tmp_path / "jq"), kv_budget=0.3)
  assert s.attention.packing == "auto"


@pytest.mark.parametrize(
  "opts, flag",
  [
    (dict(kv_bits=4), "kv_bits"),
    (dict(kv_rank=8), "--kv-rank"),
    (dict(kv_merge_rho=0.4), "--kv-merge-rho"),
    (dict(kv_select_tiles=8), "--kv-select-tiles"),
    (dict(kv_budget=0.1), "--kv-budget"),
    (dict(judgeq="runs/judgeq"), "--judgeq"),
    (dict(kv_press="snapkv", judgeq="runs/judgeq"), "--judgeq"),
    (dict(gamma=0.9), "--gamma"),
    (dict(block_size=64), "--block-size"),
  ],
)
def test_options_that_would_do_nothing_are_errors(opts, flag):
  with pytest.raises(ValueError, match=flag):
    Stack.from_options(ModelConfig.tiny(), **opts)
