"""ModelConfig: the frozen description of a jaxeff decoder, with presets and HF mapping.

A model in jaxeff is ``(ModelConfig, params)``. The config is a frozen dataclass that is
validated on construction; ``from_hf_config`` / ``to_hf_config`` translate Hugging Face
``config.json`` dictionaries through one table row per family (``jaxeff.config.hf.FAMILIES``: Llama, Mistral,
Qwen2, Qwen3, Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE) and reject, by name, every field whose behaviour jaxeff does
not implement.

Letters used in shapes across jaxeff: B batch, T query tokens, S cache slots, D d_model,
N query heads, K kv heads, G = N // K (queries per kv head), H head_dim, F d_ff, V vocab.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from jaxeff.config.hf import ATTENTION_FULL as ATTENTION_FULL
from jaxeff.config.hf import ATTENTION_SLIDING as ATTENTION_SLIDING
from jaxeff.config.hf import FAMILIES as FAMILIES
from jaxeff.config.hf import MLP_ACTIVATIONS as MLP_ACTIVATIONS
from jaxeff.config.hf import MOE_MODEL_TYPES as MOE_MODEL_TYPES
from jaxeff.config.hf import SUPPORTED_MODEL_TYPES as SUPPORTED_MODEL_TYPES
from jaxeff.config.hf import RopeScaling as RopeScaling
from jaxeff.config.hf import UnsupportedConfigError as UnsupportedConfigError
from jaxeff.config.hf import fields_to_hf, gemma_layer_types, hf_to_fields


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
    post_norms: Gemma's sandwich norms: RMSNorm on the attention output (``attn_post_norm``) and on the MLP
      output (``mlp_post_norm``) before each residual add, beside the usual pre-norms.
    mlp_activation: the gate's activation in the gated MLP: 'silu' (SwiGLU) or 'gelu_tanh' (GeGLU with the tanh
      approximation of GELU; Gemma's ``gelu_pytorch_tanh``).
    embed_scale: multiply the token embeddings by sqrt(d_model) (Gemma; the output head uses them unscaled).
    query_pre_attn_scalar: attention logits are q.k / sqrt(query_pre_attn_scalar) instead of q.k / sqrt(H)
      (Gemma); ``None`` = H.
    rope_local_theta: RoPE base of the ``sliding_attention`` layers (Gemma 3's ``rope_local_base_freq``, without
      scaling); ``None`` = ``rope_theta`` on every layer.
    final_logit_softcap: logits = c * tanh(logits / c) (Gemma); ``None`` = off.
    attn_logit_softcap: attention scores s = q.k / sqrt(d) become c * tanh(s / c) before masking and softmax
      (Gemma 2's 50.0; Gemma 3 checkpoints set it to null); ``None`` = off. Exact in ``Dense``,
      ``TrainingAttention`` and the full, windowed, evicted and quantized caches; the other backends and caches
      refuse a model that sets it (``jaxeff.models.decoder.check_softcap``).
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
  post_norms: bool = False
  mlp_activation: str = "silu"
  embed_scale: bool = False
  query_pre_attn_scalar: float | None = None
  rope_local_theta: float | None = None
  final_logit_softcap: float | None = None
  attn_logit_softcap: float | None = None
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
    if self.mlp_activation not in MLP_ACTIVATIONS:
      errors.append(f"mlp_activation must be one of {MLP_ACTIVATIONS}, got {self.mlp_activation!r}")
    if self.n_experts and self.mlp_activation != "silu":
      errors.append("mixture-of-experts MLPs are SwiGLU (mlp_activation='silu')")
    for name in ("query_pre_attn_scalar", "rope_local_theta", "final_logit_softcap", "attn_logit_softcap"):
      value = getattr(self, name)
      if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        errors.append(f"{name} must be a positive number or None, got {value!r}")
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

  @property
  def mixed_layer_types(self) -> bool:
    """Whether the layers have more than one attention type (Gemma's local sliding-window and global layers)."""
    return self.layer_types is not None and len(set(self.layer_types)) > 1

  def local_rope(self, layer: int) -> bool:
    """Whether ``layer`` uses the local RoPE base: a sliding-window layer when ``rope_local_theta`` is set (Gemma 3;
    unscaled)."""
    return self.rope_local_theta is not None and self.layer_window(layer) is not None

  @property
  def query_scale(self) -> float:
    """Factor applied to q so that a backend's q.k / sqrt(H) equals q.k / sqrt(query_pre_attn_scalar)."""
    if self.query_pre_attn_scalar is None:
      return 1.0
    return math.sqrt(self.head_dim / self.query_pre_attn_scalar)

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
      total += attn + mlp + (4 if self.post_norms else 2) * D
    if include_embeddings:
      total += self.vocab_size * D * (1 if self.tie_embeddings else 2)
    return total

  def kv_bytes_per_token(self, bytes_per_element: int = 2) -> int:
    """Bytes of full-precision KV cache per token (all layers, keys and values)."""
    return 2 * self.n_layers * self.n_kv_heads * self.head_dim * bytes_per_element

  def kv_cache_bytes(self, context: int, bytes_per_element: int = 2, window_slack: int | None = 0) -> int:
    """Bytes of full-precision KV cache holding ``context`` tokens: a sliding-window layer holds
    ``min(context, window + window_slack)`` of them (``jaxeff.kvcache.Windowed``, a ring), any other layer all;
    ``window_slack=None``: every layer holds every token (``FullCache``).

    Example:
      >>> ModelConfig.gemma3_270m().kv_cache_bytes(32768) / ModelConfig.gemma3_270m().kv_cache_bytes(32768, window_slack=None)
      0.1796875
    """
    per_layer_token = 2 * self.n_kv_heads * self.head_dim * bytes_per_element
    total = 0
    for i in range(self.n_layers):
      w = self.layer_window(i)
      total += per_layer_token * (context if w is None or window_slack is None else min(context, w + window_slack))
    return total

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
  def gemma3_270m(cls) -> ModelConfig:
    """Gemma 3 270M (268,098,176 parameters; 170M of them the 262K-token embedding): 18 layers, every 6th global,
    the others local with a 512-token window and RoPE base 10^4 (global 10^6)."""
    return cls(
      vocab_size=262144,
      d_model=640,
      n_layers=18,
      n_heads=4,
      n_kv_heads=1,
      head_dim=256,
      d_ff=2048,
      rms_norm_eps=1e-6,
      rope_theta=1_000_000.0,
      max_position_embeddings=32768,
      tie_embeddings=True,
      qk_norm=True,
      sliding_window=512,
      layer_types=gemma_layer_types(18),
      model_type="gemma3_text",
      post_norms=True,
      mlp_activation="gelu_tanh",
      embed_scale=True,
      query_pre_attn_scalar=256.0,
      rope_local_theta=10_000.0,
      bos_token_id=2,
      eos_token_id=1,
      pad_token_id=0,
    )

  @classmethod
  def preset(cls, name: str) -> ModelConfig:
    """Look up a preset by name: tiny, llama3.1-8b, qwen2.5-7b, mistral-7b, gemma3-270m."""
    table = {
      "tiny": cls.tiny,
      "llama3.1-8b": cls.llama3_1_8b,
      "qwen2.5-7b": cls.qwen2_5_7b,
      "mistral-7b": cls.mistral_7b,
      "gemma3-270m": cls.gemma3_270m,
    }
    if name not in table:
      raise ValueError(f"unknown preset {name!r}; choose one of {sorted(table)}")
    return table[name]()

  # ---------------------------------------------------------------- Hugging Face mapping
  @classmethod
  def from_hf_config(cls, hf: Mapping[str, Any] | Any) -> ModelConfig:
    """Build a config from a HF ``config.json`` dict (or a ``PretrainedConfig``) through the family table in
    ``jaxeff.config.hf``.

    Raises:
      UnsupportedConfigError: listing every field (by name) whose value jaxeff does not implement, e.g.
        ``hidden_act='gelu'``, ``mlp_bias=True``, a ``rope_type`` other than default/llama3,
        ``quantization_config``.
    """
    return cls(**hf_to_fields(hf))

  def to_hf_config(self) -> dict[str, Any]:
    """The HF ``config.json`` dict that transformers' PyTorch class for ``model_type`` loads (the family table in
    ``jaxeff.config.hf``).

    Raises:
      UnsupportedConfigError: if this config uses a feature the HF family cannot express (e.g. q/k norm on
        Llama, an output bias on Qwen2).
    """
    return fields_to_hf(self)

  def replace(self, **changes: Any) -> ModelConfig:
    """``dataclasses.replace`` with validation (the CLI's ``key=value`` overrides go through here)."""
    return dataclasses.replace(self, **changes)


def rope_inv_freq(config: ModelConfig, layer: int | None = None):
  """Inverse RoPE frequencies f_i = theta^(-2i/H) (i < H/2), with Llama-3 or linear scaling when configured.

  ``layer``: the frequencies of that layer (``config.local_rope``: Gemma 3's sliding layers use their own base,
  unscaled); ``None`` = the global ones. Computed in float64 Python then used as float32, as HF computes
  them in float32 from int64 exponents.
  """
  import numpy as np

  H = config.head_dim
  local = layer is not None and config.local_rope(layer)
  theta = config.rope_local_theta if local else config.rope_theta
  inv = 1.0 / (theta ** (np.arange(0, H, 2, dtype=np.int64).astype(np.float32) / H))
  inv = inv.astype(np.float32)
  rs = config.rope_scaling
  if rs is None or local:
    return inv
  if rs.rope_type == "linear":
    return (inv / np.float32(rs.factor)).astype(np.float32)
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
