import dataclasses
import re

import jax
import pytest

from jaxeff.config import ModelConfig, RopeScaling, UnsupportedConfigError
from jaxeff.models import count_params, param_shapes


@pytest.mark.parametrize(
  "name, published",
  [
    # Published totals (model cards / safetensors index totals divided by dtype size).
    ("llama3.1-8b", 8_030_261_248),
    ("qwen2.5-7b", 7_615_616_512),
    ("mistral-7b", 7_241_732_096),
    ("gemma3-270m", 268_098_176),  # "268M" on the card; the fetched checkpoint's tensors sum to this exactly
  ],
)
def test_full_size_presets_match_published_parameter_counts(name, published):
  cfg = ModelConfig.preset(name)
  shapes = jax.eval_shape(lambda: param_shapes(cfg))  # shapes only: nothing is allocated
  assert count_params(shapes) == published
  assert cfg.param_count() == published


def test_closed_form_param_count_matches_table_for_every_feature():
  for kw in [
    {},
    dict(qkv_bias=True, model_type="qwen2"),
    dict(qk_norm=True, model_type="qwen3"),
    dict(tie_embeddings=True),
    dict(qkv_bias=True, o_bias=True),
    dict(model_type="gemma3_text", qk_norm=True, post_norms=True, embed_scale=True, tie_embeddings=True),
  ]:
    cfg = ModelConfig.tiny(**kw)
    assert cfg.param_count() == count_params(param_shapes(cfg)), kw


def test_init_params_eval_shape_at_full_size():
  from jaxeff.models import init_params

  cfg = ModelConfig.llama3_1_8b()
  out = jax.eval_shape(lambda k: init_params(cfg, k), jax.random.key(0))
  assert out["layers"][31]["mlp"]["gate"].shape == (14336, 4096)
  assert out["lm_head"].shape == (128256, 4096)


def test_config_is_frozen_and_validated():
  cfg = ModelConfig.tiny()
  with pytest.raises(dataclasses.FrozenInstanceError):
    cfg.d_model = 3  # type: ignore[misc]
  with pytest.raises(ValueError, match="multiple of n_kv_heads"):
    ModelConfig.tiny(n_heads=4, n_kv_heads=3)
  with pytest.raises(ValueError, match="head_dim must be even"):
    ModelConfig.tiny(head_dim=15)
  with pytest.raises(ValueError, match="layer_types has 3 entries"):
    ModelConfig.tiny(layer_types=("full_attention",) * 3)
  with pytest.raises(ValueError, match="sliding_window is None"):
    ModelConfig.tiny(layer_types=("sliding_attention", "full_attention"))
  with pytest.raises(ValueError, match="high_freq_factor"):
    RopeScaling(8.0, 4.0, 1.0, 8192)


def _hf_dict(model_type, **extra):
  d = dict(
    model_type=model_type,
    vocab_size=100,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    rms_norm_eps=1e-5,
    rope_parameters={"rope_theta": 10000.0, "rope_type": "default"},
  )
  d.update(extra)
  return d


def test_from_hf_rejects_unsupported_fields_by_name_all_at_once():
  hf = _hf_dict("llama", hidden_act="gelu", mlp_bias=True, quantization_config={"bits": 4}, moe_thing=3)
  with pytest.raises(UnsupportedConfigError) as e:
    ModelConfig.from_hf_config(hf)
  msg = str(e.value)
  for word in ("hidden_act='gelu'", "mlp_bias", "quantization_config", "moe_thing"):
    assert word in msg


def test_from_hf_rejects_rope_types_and_architectures():
  with pytest.raises(UnsupportedConfigError, match="rope_type='yarn'"):
    ModelConfig.from_hf_config(
      _hf_dict("llama", rope_parameters={"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0})
    )
  with pytest.raises(UnsupportedConfigError, match="model_type='gpt2'"):
    ModelConfig.from_hf_config(_hf_dict("gpt2"))


@pytest.mark.parametrize(
  "hf",
  [
    _hf_dict(
      "llama",
      rope_parameters=dict(
        rope_type="llama3",
        rope_theta=5e5,
        factor=8.0,
        low_freq_factor=1.0,
        high_freq_factor=4.0,
        original_max_position_embeddings=8192,
      ),
    ),
    _hf_dict("mistral", sliding_window=16, head_dim=16),
    _hf_dict("qwen2", use_sliding_window=True, sliding_window=8, max_window_layers=1),
    _hf_dict("qwen3", head_dim=32, attention_bias=True),
  ],
  ids=["llama3-rope", "mistral-window", "qwen2-bias-window", "qwen3-qknorm"],
)
def test_hf_config_round_trip(hf):
  cfg = ModelConfig.from_hf_config(hf)
  assert ModelConfig.from_hf_config(cfg.to_hf_config()) == cfg


def test_hf_feature_mapping():
  q2 = ModelConfig.from_hf_config(_hf_dict("qwen2", use_sliding_window=True, sliding_window=8, max_window_layers=1))
  assert q2.qkv_bias and not q2.o_bias
  assert q2.layer_types == ("full_attention", "sliding_attention")
  assert [q2.layer_window(i) for i in range(2)] == [None, 8]
  q3 = ModelConfig.from_hf_config(_hf_dict("qwen3", head_dim=32))
  assert q3.qk_norm and q3.head_dim == 32
  mi = ModelConfig.from_hf_config(_hf_dict("mistral", sliding_window=16))
  assert [mi.layer_window(i) for i in range(2)] == [16, 16]
  ll = ModelConfig.from_hf_config(_hf_dict("llama", tie_word_embeddings=True))
  assert ll.tie_embeddings and ll.head_dim == 16


def test_to_hf_rejects_what_the_family_cannot_express():
  with pytest.raises(UnsupportedConfigError, match="qk_norm"):
    ModelConfig.tiny(qk_norm=True, model_type="llama").to_hf_config()
  with pytest.raises(UnsupportedConfigError, match="qwen2 always has q/k/v biases"):
    ModelConfig.tiny(model_type="qwen2").to_hf_config()


def test_every_family_row_writes_only_fields_it_reads_and_round_trips():
  """The family table is one source for both directions: what ``fields_to_hf`` writes for a family is exactly
  accepted by ``hf_to_fields`` (no field outside the row), and the config comes back unchanged."""
  from jaxeff.config.hf import COMMON_KEYS, FAMILIES, INERT_HF_KEYS

  for mt, fam in FAMILIES.items():
    kw = dict(model_type=mt, head_dim=16)  # tiny(): d_model 64 = 4 heads x 16
    if fam.qk_norm:
      kw.update(qk_norm=True, qk_norm_scope=fam.qk_norm)
    if fam.biases == "qkv":
      kw.update(qkv_bias=True)
    if fam.gemma:
      kw.update(post_norms=True, embed_scale=True, mlp_activation="gelu_tanh", query_pre_attn_scalar=12.0)
      kw.update(sliding_window=8, layer_types=("sliding_attention", "full_attention"))
      kw.update(final_logit_softcap=30.0, attn_logit_softcap=50.0, tie_embeddings=True)
      kw.update(rope_local_theta=100.0 if fam.gemma == 3 else None)  # Gemma 2: one RoPE base
    if fam.moe is not None:
      kw.update(n_experts=4, experts_per_token=2, d_expert=32, norm_topk=True)
      if fam.moe.width == "intermediate_size":  # one width for every MLP (Mixtral, OLMoE): d_ff is unused
        kw.update(d_ff=32)
    cfg = ModelConfig.tiny(**kw)
    hf = cfg.to_hf_config()
    assert set(hf) <= INERT_HF_KEYS | COMMON_KEYS | fam.keys, (mt, set(hf) - (INERT_HF_KEYS | COMMON_KEYS | fam.keys))
    assert hf["architectures"] == [fam.architecture]
    assert ModelConfig.from_hf_config(hf) == cfg, mt


@pytest.mark.parametrize(
  "extra, message",
  [
    (dict(tie_word_embeddings="false"), "tie_word_embeddings='false' must be true or false"),
    (dict(attention_bias=1), "attention_bias=1 must be true or false"),
    (dict(num_hidden_layers=2.0), "num_hidden_layers=2.0 must be a positive integer"),
    (dict(num_hidden_layers=True), "num_hidden_layers=True must be a positive integer"),
    (dict(vocab_size=None), "missing required field 'vocab_size'"),
    (dict(rms_norm_eps=float("nan")), "rms_norm_eps=nan must be a finite positive number"),
    (dict(head_dim="16"), "head_dim='16' must be a positive integer or null"),
    (dict(eos_token_id=[1, "2"]), "eos_token_id=[1, '2'] must be a token id or a list of token ids"),
  ],
)
def test_from_hf_types_every_field(extra, message):
  """A string "false" is truthy in Python: read loosely it would silently tie the embeddings."""
  with pytest.raises(UnsupportedConfigError, match=re.escape(message)):
    ModelConfig.from_hf_config(_hf_dict("llama", **extra))


def test_from_hf_lists_every_type_problem_at_once_and_rejects_non_objects():
  with pytest.raises(UnsupportedConfigError) as e:
    ModelConfig.from_hf_config(_hf_dict("llama", tie_word_embeddings="no", hidden_size=None, mlp_bias="x"))
  assert all(s in str(e.value) for s in ("tie_word_embeddings", "'hidden_size'", "mlp_bias"))
  for bad in ([1, 2], 3, "llama"):
    with pytest.raises(UnsupportedConfigError, match="must be a JSON object"):
      ModelConfig.from_hf_config(bad)


def test_linear_rope_scaling_divides_every_global_frequency_and_round_trips():
  """Position interpolation (``rope_type: linear``, Gemma 3 4B+'s global layers): f / factor on every frequency,
  local Gemma layers left alone; the model-level oracle is the parity suite (``llama_tied`` and ``gemma3``)."""
  import numpy as np

  from jaxeff.config import rope_inv_freq
  from tests.hf_fixtures import COMMON

  hf = dict(COMMON, model_type="llama", rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": 500.0})
  cfg = ModelConfig.from_hf_config(hf)
  assert cfg.rope_scaling == RopeScaling(4.0, rope_type="linear")
  plain = dataclasses.replace(cfg, rope_scaling=None)
  np.testing.assert_allclose(rope_inv_freq(cfg), rope_inv_freq(plain) / 4.0, rtol=1e-7)
  assert ModelConfig.from_hf_config(cfg.to_hf_config()) == cfg
  gem = ModelConfig.tiny(
    model_type="gemma3_text",
    post_norms=True,
    embed_scale=True,
    sliding_window=4,
    layer_types=("sliding_attention", "full_attention"),
    rope_local_theta=100.0,
    rope_scaling=RopeScaling(8.0, rope_type="linear"),
  )
  unscaled = dataclasses.replace(gem, rope_scaling=None)
  np.testing.assert_array_equal(rope_inv_freq(gem, 0), rope_inv_freq(unscaled, 0))  # local: untouched
  np.testing.assert_allclose(rope_inv_freq(gem, 1), rope_inv_freq(unscaled, 1) / 8.0, rtol=1e-7)
  with pytest.raises(UnsupportedConfigError, match="linear needs a positive factor, got 0"):
    ModelConfig.from_hf_config({**hf, "rope_parameters": {"rope_type": "linear", "factor": 0}})
  with pytest.raises(ValueError, match="rope_type must be 'llama3' or 'linear'"):
    RopeScaling(2.0, rope_type="yarn")
