"""Tiny random Hugging Face PyTorch models, built offline from configs (the parity oracle)."""

from __future__ import annotations

COMMON = dict(
  vocab_size=128,
  hidden_size=64,
  intermediate_size=96,
  num_hidden_layers=2,
  num_attention_heads=4,
  num_key_value_heads=2,
  max_position_embeddings=256,
  rms_norm_eps=1e-5,
)

LLAMA3_ROPE = dict(
  rope_type="llama3",
  rope_theta=10000.0,
  factor=8.0,
  low_freq_factor=1.0,
  high_freq_factor=4.0,
  original_max_position_embeddings=32,
)


def tiny_gemma(**overrides):
  """Gemma 3's layout in a jaxeff tiny config (no HF involved): local layers with their own RoPE base around
  global ones, sandwich norms, GeGLU, scaled embeddings, q/k norm."""
  from jaxeff.config import ModelConfig

  kw = dict(
    model_type="gemma3_text",
    post_norms=True,
    embed_scale=True,
    mlp_activation="gelu_tanh",
    qk_norm=True,
    rope_local_theta=100.0,
  )
  return ModelConfig.tiny(**{**kw, **overrides})


def hf_config(family: str):
  import transformers as tf

  if family == "llama":  # llama3 RoPE scaling, attention biases
    return tf.LlamaConfig(**COMMON, rope_parameters=LLAMA3_ROPE, attention_bias=True)
  if family == "llama_tied":  # tied embeddings, linear RoPE scaling (position interpolation)
    return tf.LlamaConfig(**COMMON, tie_word_embeddings=True, rope_parameters={"rope_type": "linear", "factor": 4.0})
  if family == "mistral":  # sliding window shorter than the test sequences
    return tf.MistralConfig(**COMMON, sliding_window=5)
  if family == "qwen2":  # qkv bias, sliding window on layer 1 only
    return tf.Qwen2Config(**COMMON, use_sliding_window=True, sliding_window=4, max_window_layers=1)
  if family == "qwen3":  # q/k RMSNorm, explicit head_dim != hidden/heads
    return tf.Qwen3Config(**COMMON, head_dim=32)
  if family == "mixtral":  # 4 experts, top-2, renormalised (dense path)
    return tf.MixtralConfig(**dict(COMMON, intermediate_size=48), num_local_experts=4, num_experts_per_tok=2)
  if family == "qwen2_moe":  # shared expert with sigmoid gate, no renorm, layer 1 dense (mlp_only_layers)
    return tf.Qwen2MoeConfig(
      **COMMON,
      num_experts=4,
      num_experts_per_tok=2,
      moe_intermediate_size=32,
      shared_expert_intermediate_size=40,
      mlp_only_layers=[1],
    )
  if family == "qwen3_moe":  # 12 experts, top-3, renormalised (routed path: ragged_dot), q/k norm
    return tf.Qwen3MoeConfig(
      **COMMON, head_dim=32, num_experts=12, num_experts_per_tok=3, moe_intermediate_size=24, norm_topk_prob=True
    )
  if family == "olmoe":  # q/k RMSNorm over the whole projection, clip_qkv, no renorm (8 experts: dense path)
    return tf.OlmoeConfig(**dict(COMMON, intermediate_size=32), num_experts=8, num_experts_per_tok=2, clip_qkv=0.5)
  if family == "gemma3":  # 3 local layers (window 4 < the prompts) around a global one, each with its own RoPE
    # base (the global one linearly scaled, as Gemma 3 4B+); q/k norms, sandwich norms, GeGLU, sqrt(d) embeddings,
    # query_pre_attn_scalar != head_dim, a soft-cap
    return tf.Gemma3TextConfig(
      **dict(COMMON, num_hidden_layers=4, rms_norm_eps=1e-6),
      head_dim=32,
      sliding_window=4,
      layer_types=["sliding_attention", "full_attention", "sliding_attention", "sliding_attention"],
      query_pre_attn_scalar=24,
      final_logit_softcapping=3.0,
      rope_parameters={
        "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 50000.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 100.0},
      },
    )
  if family == "gemma2":  # local / global alternating (window 4 < the prompts), one RoPE base, no q/k norm, and
    # both soft-caps small enough to bend most scores (attention 1.0, final 3.0): the attention cap's oracle
    return tf.Gemma2Config(
      **dict(COMMON, num_hidden_layers=4, rms_norm_eps=1e-6),
      head_dim=32,
      sliding_window=4,
      query_pre_attn_scalar=24,
      attn_logit_softcapping=1.0,
      final_logit_softcapping=3.0,
      rope_parameters={"rope_type": "default", "rope_theta": 500.0},
    )
  raise ValueError(family)


FAMILIES = ("llama", "llama_tied", "mistral", "qwen2", "qwen3", "mixtral", "qwen2_moe", "qwen3_moe", "olmoe")
FAMILIES += ("gemma3", "gemma2")


def make_hf_model(family: str, folder, seed: int = 0, scale: float = 0.1):
  """Build, perturb (so norms/biases are not trivially 1/0) and save a tiny model; return it in eval mode."""
  import torch
  from transformers import AutoModelForCausalLM

  torch.manual_seed(seed)
  model = AutoModelForCausalLM.from_config(hf_config(family)).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(torch.randn_like(p) * scale)
  model.save_pretrained(folder)
  return model
