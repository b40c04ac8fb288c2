"""ModelConfig: the frozen description of a jaxeff decoder, with presets and HF mapping.

Size (over 500 lines): about half is the Hugging Face translation for the supported families; moving it to one
table per family beside the weight table is pending (issue 22).

A model in jaxeff is ``(ModelConfig, params)``. The config is a frozen dataclass that is
validated on construction; ``from_hf_config`` / ``to_hf_config`` translate Hugging Face
``config.json`` dictionaries for the Llama, Mistral, Qwen2 and Qwen3 families and reject,
by name, every field whose behaviour jaxeff does not implement.

Letters used in shapes across jaxeff: B batch, T query tokens, S cache slots, D d_model,
N query heads, K kv heads, G = N // K (queries per kv head), H head_dim, F d_ff, V vocab.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

ATTENTION_FULL = "full_attention"
ATTENTION_SLIDING = "sliding_attention"

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "mixtral", "qwen2_moe", "qwen3_moe", "olmoe")
MOE_MODEL_TYPES = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe")

_ARCHITECTURES = {
  "llama": "LlamaForCausalLM",
  "mistral": "MistralForCausalLM",
  "qwen2": "Qwen2ForCausalLM",
  "qwen3": "Qwen3ForCausalLM",
  "mixtral": "MixtralForCausalLM",
  "qwen2_moe": "Qwen2MoeForCausalLM",
  "qwen3_moe": "Qwen3MoeForCausalLM",
  "olmoe": "OlmoeForCausalLM",
}

# HF config keys that carry no modelling behaviour (bookkeeping, generation defaults, training-only knobs
# that are inert at inference). Everything else must be understood or the config is rejected.
_INERT_HF_KEYS = frozenset(
  {
    "_name_or_path",
    "architectures",
    "model_type",
    "transformers_version",
    "dtype",
    "torch_dtype",
    "use_cache",
    "initializer_range",
    "attention_dropout",
    "pretraining_tp",  # pure re-association of the same matmuls in HF; numerically equivalent.
    "id2label",
    "label2id",
    "return_dict",
    "output_attentions",
    "output_hidden_states",
    "chunk_size_feed_forward",
    "is_encoder_decoder",
    "problem_type",
    "tokenizer_class",
    "prefix",
    "task_specific_params",
    "finetuning_task",
    "tie_encoder_decoder",
    "max_window_layers",  # consumed through layer_types
    "use_sliding_window",  # consumed through layer_types / sliding_window
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "output_router_logits",  # training-time outputs and losses of MoE routers
    "router_aux_loss_coef",
    "router_jitter_noise",  # multiplicative noise applied only in training mode
  }
)

_MODEL_KEYS = {
  "llama": {"attention_bias", "mlp_bias", "head_dim"},
  "mistral": {"sliding_window", "head_dim"},
  "qwen2": {"sliding_window", "layer_types"},
  "qwen3": {"sliding_window", "layer_types", "head_dim", "attention_bias"},
  "mixtral": {"sliding_window", "head_dim", "num_local_experts", "num_experts_per_tok"},
  "qwen2_moe": {"sliding_window", "layer_types", "qkv_bias", "num_experts", "num_experts_per_tok"}
  | {"moe_intermediate_size", "shared_expert_intermediate_size", "norm_topk_prob", "decoder_sparse_step"}
  | {"mlp_only_layers"},
  "qwen3_moe": {"sliding_window", "layer_types", "head_dim", "attention_bias", "num_experts", "num_local_experts"}
  | {"num_experts_per_tok", "moe_intermediate_size", "norm_topk_prob", "decoder_sparse_step", "mlp_only_layers"},
  "olmoe": {"attention_bias", "clip_qkv", "num_experts", "num_experts_per_tok", "norm_topk_prob"},
}

_COMMON_KEYS = {
  "vocab_size",
  "hidden_size",
  "intermediate_size",
  "num_hidden_layers",
  "num_attention_heads",
  "num_key_value_heads",
  "hidden_act",
  "max_position_embeddings",
  "rms_norm_eps",
  "tie_word_embeddings",
  "rope_parameters",
  "rope_scaling",
  "rope_theta",
}


class UnsupportedConfigError(ValueError):
  """A Hugging Face config uses fields or values that jaxeff does not implement."""


@dataclasses.dataclass(frozen=True, slots=True)
class RopeScaling:
  """Llama-3 frequency-dependent RoPE scaling (``rope_type: llama3``).

  For inverse frequency f with wavelength w = 2 pi / f, low-frequency wavelengths
  w > L / low_freq_factor are divided by ``factor``; high-frequency ones w < L / high_freq_factor are
  kept; in between f is interpolated with s = (L / w - low) / (high - low):
  f' = (1 - s) f / factor + s f, where L = original_max_position_embeddings.

  References: Llama 3 (arXiv:2407.21783), ``_compute_llama3_parameters`` in transformers.
  """

  factor: float = 8.0
  low_freq_factor: float = 1.0
  high_freq_factor: float = 4.0
  original_max_position_embeddings: int = 8192

  def __post_init__(self):
    if self.factor <= 0:
      raise ValueError(f"RopeScaling.factor must be > 0, got {self.factor}")
    if self.high_freq_factor <= self.low_freq_factor:
      raise ValueError(
        f"RopeScaling.high_freq_factor ({self.high_freq_factor}) must exceed low_freq_factor ({self.low_freq_factor})"
      )


@dataclasses.dataclass(frozen=True, slots=True)
class ModelConfig:
  """Hyper-parameters of a pre-norm decoder (RMSNorm, GQA + RoPE, SwiGLU).

  Attributes:
    vocab_size: V.
    d_model: D, the residual width.
    n_layers: number of decoder blocks.
    n_heads: N query heads.
    n_kv_heads: K key/value heads; N must be a multiple of K (GQA with G = N // K).
    head_dim: H.
    d_ff: F, the SwiGLU hidden width.
    rms_norm_eps: epsilon inside every RMSNorm.
    rope_theta: RoPE base.
    rope_scaling: optional Llama-3 scaling of the RoPE frequencies.
    max_position_embeddings: longest position the model was trained for.
    tie_embeddings: output head = embedding transpose.
    qkv_bias: biases on the q/k/v projections (Qwen2; Llama/Qwen3 ``attention_bias``).
    o_bias: bias on the output projection (Llama/Qwen3 ``attention_bias``).
    qk_norm: per-head RMSNorm on queries and keys before RoPE (Qwen3).
    sliding_window: window W for layers of type ``sliding_attention``: a query at position p sees keys at
      positions q with p - W < q <= p (Mistral / HF convention).
    layer_types: per-layer ``full_attention`` / ``sliding_attention``; ``None`` means all full, or all sliding
      when ``sliding_window`` is set (Mistral).
    model_type: the HF family used by ``to_hf_config`` (llama, mistral, qwen2, qwen3, mixtral, qwen2_moe,
      qwen3_moe).
    qk_norm_scope: 'head' (Qwen3: RMSNorm over each head's H dims) or 'full' (OLMoE: over all N*H query / K*H
      key dims of the projection).
    clip_qkv: clamp q, k (after their norm) and v to [-c, c] (OLMoE); ``None`` = off.
    n_experts, experts_per_token, d_expert: mixture-of-experts MLPs (0 = dense): E routed SwiGLU experts of
      width ``d_expert``, top-k routing by softmax of the router logits.
    norm_topk: renormalise the k selected routing weights to sum to 1 (Mixtral always; Qwen-MoE's
      ``norm_topk_prob``).
    d_shared, shared_gate: a shared SwiGLU expert of width ``d_shared`` added to every token, scaled by
      ``sigmoid(w_g . x)`` when ``shared_gate`` (Qwen2-MoE).
    moe_layers: per layer, whether its MLP is the MoE block (``None`` = all layers when ``n_experts > 0``);
      dense layers use ``d_ff``.
    bos_token_id, eos_token_id, pad_token_id: special token ids (eos may be a tuple).

  Example:
    >>> cfg = ModelConfig.tiny()
    >>> cfg.n_heads // cfg.n_kv_heads
    2
  """

  vocab_size: int
  d_model: int
  n_layers: int
  n_heads: int
  n_kv_heads: int
  head_dim: int
  d_ff: int
  rms_norm_eps: float = 1e-6
  rope_theta: float = 10000.0
  rope_scaling: RopeScaling | None = None
  max_position_embeddings: int = 4096
  tie_embeddings: bool = False
  qkv_bias: bool = False
  o_bias: bool = False
  qk_norm: bool = False
  qk_norm_scope: str = "head"
  clip_qkv: float | None = None
  sliding_window: int | None = None
  layer_types: tuple[str, ...] | None = None
  model_type: str = "llama"
  n_experts: int = 0
  experts_per_token: int = 0
  d_expert: int = 0
  norm_topk: bool = False
  d_shared: int = 0
  shared_gate: bool = False
  moe_layers: tuple[bool, ...] | None = None
  bos_token_id: int | None = None
  eos_token_id: int | tuple[int, ...] | None = None
  pad_token_id: int | None = None

  def __post_init__(self):
    errors = []
    for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff"):
      value = getattr(self, name)
      if not isinstance(value, int) or value <= 0:
        errors.append(f"{name} must be a positive int, got {value!r}")
    if not errors and self.n_heads % self.n_kv_heads:
      errors.append(f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})")
    if not errors and self.head_dim % 2:
      errors.append(f"head_dim must be even for RoPE, got {self.head_dim}")
    if self.rms_norm_eps <= 0:
      errors.append(f"rms_norm_eps must be > 0, got {self.rms_norm_eps}")
    if self.rope_theta <= 1:
      errors.append(f"rope_theta must be > 1, got {self.rope_theta}")
    if self.sliding_window is not None and self.sliding_window <= 0:
      errors.append(f"sliding_window must be positive or None, got {self.sliding_window}")
    if self.model_type not in SUPPORTED_MODEL_TYPES:
      errors.append(f"model_type must be one of {SUPPORTED_MODEL_TYPES}, got {self.model_type!r}")
    if self.layer_types is not None:
      if not isinstance(self.layer_types, tuple):
        object.__setattr__(self, "layer_types", tuple(self.layer_types))
      if len(self.layer_types) != self.n_layers:
        errors.append(f"layer_types has {len(self.layer_types)} entries for {self.n_layers} layers")
      bad = sorted({t for t in self.layer_types if t not in (ATTENTION_FULL, ATTENTION_SLIDING)})
      if bad:
        errors.append(f"unknown layer_types {bad}; expected {ATTENTION_FULL!r} or {ATTENTION_SLIDING!r}")
      if ATTENTION_SLIDING in self.layer_types and self.sliding_window is None:
        errors.append("layer_types contains sliding_attention but sliding_window is None")
    if isinstance(self.eos_token_id, list):
      object.__setattr__(self, "eos_token_id", tuple(self.eos_token_id))
    if self.qk_norm_scope not in ("head", "full"):
      errors.append(f"qk_norm_scope must be 'head' or 'full', got {self.qk_norm_scope!r}")
    if self.clip_qkv is not None and self.clip_qkv <= 0:
      errors.append(f"clip_qkv must be positive or None, got {self.clip_qkv}")
    if self.n_experts:
      if not 1 <= self.experts_per_token <= self.n_experts:
        errors.append(f"experts_per_token must be in [1, n_experts={self.n_experts}], got {self.experts_per_token}")
      if self.d_expert <= 0:
        errors.append(f"d_expert must be positive for a MoE config, got {self.d_expert}")
    if self.d_shared < 0 or self.n_experts < 0:
      errors.append("n_experts and d_shared must be >= 0")
    if self.moe_layers is not None:
      object.__setattr__(self, "moe_layers", tuple(bool(x) for x in self.moe_layers))
      if len(self.moe_layers) != self.n_layers:
        errors.append(f"moe_layers has {len(self.moe_layers)} entries for {self.n_layers} layers")
    if errors:
      raise ValueError("invalid ModelConfig: " + "; ".join(errors))

  # ---------------------------------------------------------------- derived quantities
  @property
  def q_per_kv(self) -> int:
    """G = N // K."""
    return self.n_heads // self.n_kv_heads

  def layer_window(self, layer: int) -> int | None:
    """Sliding window of ``layer`` (``None`` = full causal attention)."""
    if self.sliding_window is None:
      return None
    if self.layer_types is None:
      return self.sliding_window
    return self.sliding_window if self.layer_types[layer] == ATTENTION_SLIDING else None

  def is_moe(self, layer: int) -> bool:
    """Whether ``layer``'s MLP is the mixture-of-experts block."""
    if not self.n_experts:
      return False
    return True if self.moe_layers is None else self.moe_layers[layer]

  @property
  def stop_token_ids(self) -> tuple[int, ...]:
    if self.eos_token_id is None:
      return ()
    if isinstance(self.eos_token_id, int):
      return (self.eos_token_id,)
    return tuple(self.eos_token_id)

  def param_count(self, *, include_embeddings: bool = True) -> int:
    """Exact number of parameters (closed form; checked against ``init_params`` in tests).

    Non-embedding count excludes the token embedding and the (untied) output head.
    """
    D, N, K, H, F = self.d_model, self.n_heads, self.n_kv_heads, self.head_dim, self.d_ff
    attn = D * N * H + 2 * D * K * H + N * H * D
    if self.qkv_bias:
      attn += N * H + 2 * K * H
    if self.o_bias:
      attn += D
    if self.qk_norm:
      attn += (N + K) * H if self.qk_norm_scope == "full" else 2 * H
    total = D
    for layer in range(self.n_layers):
      if self.is_moe(layer):
        mlp = self.n_experts * (3 * D * self.d_expert + D) + 3 * D * self.d_shared + (D if self.shared_gate else 0)
      else:
        mlp = 3 * D * F
      total += attn + mlp + 2 * D
    if include_embeddings:
      total += self.vocab_size * D * (1 if self.tie_embeddings else 2)
    return total

  def kv_bytes_per_token(self, bytes_per_element: int = 2) -> int:
    """Bytes of full-precision KV cache per token (all layers, keys and values)."""
    return 2 * self.n_layers * self.n_kv_heads * self.head_dim * bytes_per_element

  # ---------------------------------------------------------------- presets
  @classmethod
  def tiny(cls, **overrides: Any) -> ModelConfig:
    """A tiny Llama-style config for tests (d_model 64, 2 layers, GQA 4/2, byte-sized vocab)."""
    base = dict(
      vocab_size=272,
      d_model=64,
      n_layers=2,
      n_heads=4,
      n_kv_heads=2,
      head_dim=16,
      d_ff=128,
      max_position_embeddings=2048,
      bos_token_id=256,
      eos_token_id=257,
      pad_token_id=258,
    )
    base.update(overrides)
    return cls(**base)

  @classmethod
  def llama3_1_8b(cls) -> ModelConfig:
    """Llama-3.1-8B (8,030,261,248 parameters). Use with ``jax.eval_shape`` only on CPU."""
    return cls(
      vocab_size=128256,
      d_model=4096,
      n_layers=32,
      n_heads=32,
      n_kv_heads=8,
      head_dim=128,
      d_ff=14336,
      rms_norm_eps=1e-5,
      rope_theta=500000.0,
      rope_scaling=RopeScaling(8.0, 1.0, 4.0, 8192),
      max_position_embeddings=131072,
      model_type="llama",
      bos_token_id=128000,
      eos_token_id=(128001, 128008, 128009),
    )

  @classmethod
  def qwen2_5_7b(cls) -> ModelConfig:
    """Qwen2.5-7B (7,615,616,512 parameters). Use with ``jax.eval_shape`` only on CPU."""
    return cls(
      vocab_size=152064,
      d_model=3584,
      n_layers=28,
      n_heads=28,
      n_kv_heads=4,
      head_dim=128,
      d_ff=18944,
      rms_norm_eps=1e-6,
      rope_theta=1000000.0,
      max_position_embeddings=131072,
      qkv_bias=True,
      model_type="qwen2",
      bos_token_id=151643,
      eos_token_id=151643,
    )

  @classmethod
  def mistral_7b(cls) -> ModelConfig:
    """Mistral-7B-v0.1 (7,241,732,096 parameters), 4096-token sliding window."""
    return cls(
      vocab_size=32000,
      d_model=4096,
      n_layers=32,
      n_heads=32,
      n_kv_heads=8,
      head_dim=128,
      d_ff=14336,
      rms_norm_eps=1e-5,
      rope_theta=10000.0,
      max_position_embeddings=32768,
      sliding_window=4096,
      model_type="mistral",
      bos_token_id=1,
      eos_token_id=2,
    )

  @classmethod
  def preset(cls, name: str) -> ModelConfig:
    """Look up a preset by name: tiny, llama3.1-8b, qwen2.5-7b, mistral-7b."""
    table = {
      "tiny": cls.tiny,
      "llama3.1-8b": cls.llama3_1_8b,
      "qwen2.5-7b": cls.qwen2_5_7b,
      "mistral-7b": cls.mistral_7b,
    }
    if name not in table:
      raise ValueError(f"unknown preset {name!r}; choose one of {sorted(table)}")
    return table[name]()

  # ---------------------------------------------------------------- Hugging Face mapping
  @classmethod
  def from_hf_config(cls, hf: Mapping[str, Any] | Any) -> ModelConfig:
    """Build a config from a HF ``config.json`` dict (or a ``PretrainedConfig``).

    Raises:
      UnsupportedConfigError: listing every field (by name) whose value jaxeff does not implement, e.g.
        ``hidden_act='gelu'``, ``mlp_bias=True``, a ``rope_type`` other than default/llama3,
        ``quantization_config``.
    """
    if not isinstance(hf, Mapping):
      hf = hf.to_dict()
    hf = dict(hf)
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
      raise UnsupportedConfigError(
        f"unsupported architecture model_type={model_type!r}; jaxeff supports {', '.join(SUPPORTED_MODEL_TYPES)}"
      )
    problems = []
    known = _INERT_HF_KEYS | _COMMON_KEYS | _MODEL_KEYS[model_type]
    unknown = sorted(k for k in hf if k not in known)
    if unknown:
      problems.append(f"unsupported fields for {model_type}: {', '.join(unknown)}")
    act = hf.get("hidden_act", "silu")
    if act != "silu":
      problems.append(f"hidden_act={act!r} (only 'silu' SwiGLU is implemented)")
    if hf.get("mlp_bias"):
      problems.append("mlp_bias=True (MLP biases are not implemented)")

    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    rope = dict(rope)
    rope_theta = float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    rope_scaling = None
    if rope_type == "llama3":
      try:
        rope_scaling = RopeScaling(
          float(rope["factor"]),
          float(rope["low_freq_factor"]),
          float(rope["high_freq_factor"]),
          int(rope.get("original_max_position_embeddings", hf.get("max_position_embeddings", 8192))),
        )
      except KeyError as e:
        problems.append(f"rope_parameters for llama3 lacks {e.args[0]!r}")
    elif rope_type != "default":
      problems.append(f"rope_type={rope_type!r} (only 'default' and 'llama3' are implemented)")
    extra_rope = sorted(
      set(rope)
      - {"rope_theta", "rope_type", "type", "factor", "low_freq_factor", "high_freq_factor"}
      - {"original_max_position_embeddings"}
    )
    if extra_rope:
      problems.append(f"unsupported rope_parameters fields: {', '.join(extra_rope)}")
    if problems:
      raise UnsupportedConfigError("; ".join(problems))

    n_heads = int(hf["num_attention_heads"])
    d_model = int(hf["hidden_size"])
    head_dim = hf.get("head_dim") or d_model // n_heads
    n_layers = int(hf["num_hidden_layers"])
    attention_bias = bool(hf.get("attention_bias", False))
    if model_type in ("qwen2", "qwen2_moe"):
      qkv_bias, o_bias = True, False
    else:
      qkv_bias = o_bias = attention_bias

    sliding_window = None
    layer_types = None
    if model_type in ("mistral", "mixtral"):
      sliding_window = hf.get("sliding_window")
    elif model_type in ("qwen2", "qwen3", "qwen2_moe", "qwen3_moe"):
      if hf.get("use_sliding_window", False) and hf.get("sliding_window"):
        sliding_window = int(hf["sliding_window"])
        lt = hf.get("layer_types")
        if lt is None:
          mwl = int(hf.get("max_window_layers", n_layers))
          lt = [ATTENTION_SLIDING if i >= mwl else ATTENTION_FULL for i in range(n_layers)]
        layer_types = tuple(lt)
        if ATTENTION_SLIDING not in layer_types:
          sliding_window, layer_types = None, None

    moe: dict[str, Any] = {}
    if model_type in MOE_MODEL_TYPES:
      n_exp = int(hf.get("num_local_experts") or hf.get("num_experts") or 0)
      width = int(hf["intermediate_size"] if model_type in ("mixtral", "olmoe") else hf["moe_intermediate_size"])
      moe = dict(n_experts=n_exp, experts_per_token=int(hf.get("num_experts_per_tok", 2)), d_expert=width)
      moe["norm_topk"] = True if model_type == "mixtral" else bool(hf.get("norm_topk_prob", False))
      if model_type == "qwen2_moe" and int(hf.get("shared_expert_intermediate_size") or 0) > 0:
        moe.update(d_shared=int(hf["shared_expert_intermediate_size"]), shared_gate=True)
      if model_type in ("qwen2_moe", "qwen3_moe"):
        step = int(hf.get("decoder_sparse_step", 1) or 1)
        only = set(hf.get("mlp_only_layers") or [])
        layers = tuple(i not in only and n_exp > 0 and (i + 1) % step == 0 for i in range(n_layers))
        moe["moe_layers"] = None if all(layers) else layers
      if model_type == "qwen2_moe" and not hf.get("qkv_bias", True):
        qkv_bias = False

    eos = hf.get("eos_token_id")
    return cls(
      vocab_size=int(hf["vocab_size"]),
      d_model=d_model,
      n_layers=n_layers,
      n_heads=n_heads,
      n_kv_heads=int(hf.get("num_key_value_heads") or n_heads),
      head_dim=int(head_dim),
      d_ff=int(hf["intermediate_size"]),
      rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
      rope_theta=rope_theta,
      rope_scaling=rope_scaling,
      max_position_embeddings=int(hf.get("max_position_embeddings", 4096)),
      tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
      qkv_bias=qkv_bias,
      o_bias=o_bias,
      qk_norm=model_type in ("qwen3", "qwen3_moe", "olmoe"),
      qk_norm_scope="full" if model_type == "olmoe" else "head",
      clip_qkv=float(hf["clip_qkv"]) if hf.get("clip_qkv") is not None else None,
      sliding_window=int(sliding_window) if sliding_window else None,
      layer_types=layer_types,
      model_type=model_type,
      **moe,
      bos_token_id=hf.get("bos_token_id"),
      eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
      pad_token_id=hf.get("pad_token_id"),
    )

  def to_hf_config(self) -> dict[str, Any]:
    """The HF ``config.json`` dict that transformers' PyTorch class for ``model_type`` loads.

    Raises:
      UnsupportedConfigError: if this config uses a feature the HF family cannot express (e.g. q/k norm on
        Llama, an output bias on Qwen2).
    """
    mt = self.model_type
    base = {"mixtral": "mistral", "qwen2_moe": "qwen2", "qwen3_moe": "qwen3", "olmoe": "olmoe"}.get(mt, mt)
    problems = []
    if (mt in MOE_MODEL_TYPES) != bool(self.n_experts):
      problems.append(f"model_type={mt!r} with n_experts={self.n_experts}: MoE families need experts, dense ones none")
    if mt == "mixtral" and (not self.norm_topk or self.d_shared or self.moe_layers is not None):
      problems.append("mixtral renormalises top-k weights, has no shared expert and MoE in every layer")
    if mt == "qwen3_moe" and self.d_shared:
      problems.append("qwen3_moe has no shared expert")
    if mt == "qwen2_moe" and self.d_shared and not self.shared_gate:
      problems.append("qwen2_moe gates its shared expert (shared_gate=True)")
    if self.qk_norm != (base in ("qwen3", "olmoe")) or (self.qk_norm_scope == "full") != (mt == "olmoe"):
      problems.append(f"qk_norm={self.qk_norm} cannot be expressed by model_type={mt!r}")
    if base == "qwen2" and (not self.qkv_bias or self.o_bias):
      problems.append("qwen2 requires qkv_bias=True and o_bias=False")
    if base == "mistral" and (self.qkv_bias or self.o_bias):
      problems.append("mistral has no attention biases")
    if base in ("llama", "qwen3", "olmoe") and self.qkv_bias != self.o_bias:
      problems.append(
        f"{mt} ties q/k/v and o biases (attention_bias); got qkv_bias={self.qkv_bias}, o_bias={self.o_bias}"
      )
    if mt in ("llama", "olmoe") and self.sliding_window is not None:
      problems.append(f"{mt} has no sliding window")
    if self.clip_qkv is not None and mt != "olmoe":
      problems.append(f"clip_qkv is an OLMoE feature, not {mt}")
    if mt == "olmoe" and (self.d_shared or self.moe_layers is not None):
      problems.append("olmoe has no shared expert and MoE in every layer")
    if base == "mistral" and self.layer_types is not None and ATTENTION_FULL in self.layer_types:
      problems.append("mistral applies its sliding window to every layer")
    if problems:
      raise UnsupportedConfigError("; ".join(problems))

    rope: dict[str, Any] = {"rope_theta": self.rope_theta, "rope_type": "default"}
    if self.rope_scaling is not None:
      rs = self.rope_scaling
      rope.update(
        rope_type="llama3",
        factor=rs.factor,
        low_freq_factor=rs.low_freq_factor,
        high_freq_factor=rs.high_freq_factor,
        original_max_position_embeddings=rs.original_max_position_embeddings,
      )
    hf: dict[str, Any] = {
      "architectures": [_ARCHITECTURES[mt]],
      "model_type": mt,
      "vocab_size": self.vocab_size,
      "hidden_size": self.d_model,
      "intermediate_size": self.d_ff,
      "num_hidden_layers": self.n_layers,
      "num_attention_heads": self.n_heads,
      "num_key_value_heads": self.n_kv_heads,
      "hidden_act": "silu",
      "max_position_embeddings": self.max_position_embeddings,
      "rms_norm_eps": self.rms_norm_eps,
      "tie_word_embeddings": self.tie_embeddings,
      "rope_parameters": rope,
      "bos_token_id": self.bos_token_id,
      "eos_token_id": list(self.eos_token_id) if isinstance(self.eos_token_id, tuple) else self.eos_token_id,
      "pad_token_id": self.pad_token_id,
    }
    if base in ("llama", "mistral", "qwen3"):
      hf["head_dim"] = self.head_dim
    elif self.head_dim * self.n_heads != self.d_model:
      raise UnsupportedConfigError(f"qwen2 derives head_dim = hidden_size / heads; {self.head_dim} does not match")
    if base in ("llama", "qwen3", "olmoe"):
      hf["attention_bias"] = self.qkv_bias
    if mt == "llama":
      hf["mlp_bias"] = False
    if base == "mistral":
      hf["sliding_window"] = self.sliding_window
    if base in ("qwen2", "qwen3"):
      if self.sliding_window is not None:
        types = self.layer_types or (ATTENTION_SLIDING,) * self.n_layers
        hf.update(use_sliding_window=True, sliding_window=self.sliding_window, layer_types=list(types))
        hf["max_window_layers"] = next((i for i, t in enumerate(types) if t == ATTENTION_SLIDING), self.n_layers)
      else:
        hf.update(use_sliding_window=False, sliding_window=None, layer_types=[ATTENTION_FULL] * self.n_layers)
    if mt == "olmoe":
      hf.update(num_experts=self.n_experts, num_experts_per_tok=self.experts_per_token, norm_topk_prob=self.norm_topk)
      hf.update(intermediate_size=self.d_expert, clip_qkv=self.clip_qkv)
    if mt == "mixtral":
      hf.update(num_local_experts=self.n_experts, num_experts_per_tok=self.experts_per_token)
      hf["intermediate_size"] = self.d_expert
    elif mt in ("qwen2_moe", "qwen3_moe"):
      layers = self.moe_layers or (True,) * self.n_layers
      hf.update(
        num_experts=self.n_experts,
        num_experts_per_tok=self.experts_per_token,
        moe_intermediate_size=self.d_expert,
        norm_topk_prob=self.norm_topk,
        decoder_sparse_step=1,
        mlp_only_layers=[i for i, m in enumerate(layers) if not m],
      )
      if mt == "qwen2_moe":
        hf["shared_expert_intermediate_size"] = self.d_shared
        hf["qkv_bias"] = self.qkv_bias
    return hf

  def replace(self, **changes: Any) -> ModelConfig:
    """``dataclasses.replace`` with validation (the CLI's ``key=value`` overrides go through here)."""
    return dataclasses.replace(self, **changes)


def rope_inv_freq(config: ModelConfig):
  """Inverse RoPE frequencies f_i = theta^(-2i/H) (i < H/2), with Llama-3 scaling when configured.

  Computed in float64 Python then used as float32, as HF computes them in float32 from int64 exponents.
  """
  import numpy as np

  H = config.head_dim
  inv = 1.0 / (config.rope_theta ** (np.arange(0, H, 2, dtype=np.int64).astype(np.float32) / H))
  inv = inv.astype(np.float32)
  rs = config.rope_scaling
  if rs is None:
    return inv
  low_wl = rs.original_max_position_embeddings / rs.low_freq_factor
  high_wl = rs.original_max_position_embeddings / rs.high_freq_factor
  wavelen = 2 * math.pi / inv
  scaled = np.where(wavelen > low_wl, inv / rs.factor, inv)
  smooth = (rs.original_max_position_embeddings / wavelen - rs.low_freq_factor) / (
    rs.high_freq_factor - rs.low_freq_factor
  )
  smoothed = (1 - smooth) * scaled / rs.factor + smooth * scaled
  medium = ~(wavelen < high_wl) & ~(wavelen > low_wl)
  return np.where(medium, smoothed, scaled).astype(np.float32)
