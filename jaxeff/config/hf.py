"""Hugging Face ``config.json`` <-> ``ModelConfig`` fields: one translation table entry per family.

Each supported ``model_type`` is a ``Family`` row below that says, declaratively, which HF fields the family
has, how its attention biases, q/k norm, sliding window and mixture-of-experts block are spelled, and which
``ModelConfig`` settings it cannot express. ``hf_to_fields`` and ``fields_to_hf`` are the two generic readers of
that table; ``ModelConfig.from_hf_config`` / ``to_hf_config`` are thin wrappers over them. Adding a family is
adding a row (and, if it brings a new feature, one field to ``Family``).

This module sits inside ``jaxeff.config`` rather than beside the weight table in ``jaxeff.models`` because
``jaxeff.models`` imports ``jaxeff.config``: the translation must live below the decoder for the import graph to
stay a tree (``tests/test_layering.py``). The weight-name table is ``jaxeff.models.hf_io.hf_table``.

References: transformers' ``LlamaConfig``, ``MistralConfig``, ``Qwen2Config``, ``Qwen3Config``,
``MixtralConfig``, ``Qwen2MoeConfig``, ``Qwen3MoeConfig``, ``OlmoeConfig``, ``Gemma3TextConfig``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

ATTENTION_FULL = "full_attention"
ATTENTION_SLIDING = "sliding_attention"
MLP_ACTIVATIONS = ("silu", "gelu_tanh")
# HF activation names -> ``ModelConfig.mlp_activation`` (``gelu_pytorch_tanh`` and ``gelu_tanh`` are one function)
_HF_ACTIVATIONS = {"silu": "silu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_tanh": "gelu_tanh"}


class UnsupportedConfigError(ValueError):
  """A Hugging Face config uses fields or values that jaxeff does not implement."""


@dataclasses.dataclass(frozen=True, slots=True)
class RopeScaling:
  """RoPE frequency scaling: Llama 3's frequency-dependent kind (``rope_type: llama3``, the default) or linear
  position interpolation (``rope_type: linear``: Gemma 3 4B+'s global layers).

  llama3: for inverse frequency f with wavelength w = 2 pi / f, low-frequency wavelengths
  w > L / low_freq_factor are divided by ``factor``; high-frequency ones w < L / high_freq_factor are
  kept; in between f is interpolated with s = (L / w - low) / (high - low):
  f' = (1 - s) f / factor + s f, where L = original_max_position_embeddings.
  linear: f' = f / factor for every frequency (positions divided by ``factor``); the other fields are unused.

  Example:
    >>> RopeScaling(8.0, rope_type="linear").factor
    8.0

  References: Llama 3 (arXiv:2407.21783), ``_compute_llama3_parameters`` in transformers; linear: Chen et al.,
  "Extending Context Window of Large Language Models via Positional Interpolation" (arXiv:2306.15595),
  ``_compute_linear_scaling_rope_parameters`` in transformers.
  """

  factor: float = 8.0
  low_freq_factor: float = 1.0
  high_freq_factor: float = 4.0
  original_max_position_embeddings: int = 8192
  rope_type: str = "llama3"

  def __post_init__(self):
    if self.rope_type not in ("llama3", "linear"):
      raise ValueError(f"RopeScaling.rope_type must be 'llama3' or 'linear', got {self.rope_type!r}")
    if self.factor <= 0:
      raise ValueError(f"RopeScaling.factor must be > 0, got {self.factor}")
    if self.rope_type == "llama3" and self.high_freq_factor <= self.low_freq_factor:
      raise ValueError(
        f"RopeScaling.high_freq_factor ({self.high_freq_factor}) must exceed low_freq_factor ({self.low_freq_factor})"
      )


@dataclasses.dataclass(frozen=True)
class MoEKeys:
  """How a family spells its mixture-of-experts block.

  experts: the expert-count key(s), first present wins; width: the key of each expert's width;
  norm_topk: ``True`` if top-k weights are always renormalised, else the key that says so; shared: a gated shared
  expert (``shared_expert_intermediate_size``); layer_select: MoE only in some layers (``decoder_sparse_step``,
  ``mlp_only_layers``)."""

  experts: tuple[str, ...]
  width: str
  norm_topk: bool | str
  shared: bool = False
  layer_select: bool = False


@dataclasses.dataclass(frozen=True)
class Family:
  """One row of the translation table.

  architecture: the transformers class name written to ``architectures``.
  keys: HF fields this family has beyond the common ones (anything else is rejected by name).
  biases: 'tied' (``attention_bias`` sets q/k/v and o biases together), 'qkv' (q/k/v biases always, no o bias;
    Qwen2) or 'none'.
  head_dim: 'key' (``head_dim`` is a field) or 'derived' (hidden_size / heads).
  qk_norm: None, 'head' (RMSNorm per head; Qwen3) or 'full' (over all heads' dims; OLMoE).
  sliding: None, 'all' (one window on every layer; Mistral) or 'typed' (``use_sliding_window`` +
    ``layer_types`` / ``max_window_layers``; Qwen).
  moe: ``MoEKeys`` for mixture-of-experts families, else None.
  clip_qkv: the family clamps q/k/v (OLMoE).
  mlp_bias_key: the family writes ``mlp_bias: false`` (Llama).
  gemma: the Gemma generation (2 or 3; 0 = not Gemma). Both: (1 + w) RMSNorm weights (converted at load: jaxeff
    stores 1 + w), sandwich norms, ``hidden_activation``, sqrt(d) embedding scale, ``query_pre_attn_scalar``,
    final- and attention-logit soft-capping, ``sliding_window`` + ``layer_types``. Gemma 2: one RoPE base,
    every other layer local, soft-caps 30 / 50 by default. Gemma 3: per-layer-type RoPE bases in
    ``rope_parameters`` (or the legacy ``rope_local_base_freq``), every 6th layer global (or the legacy
    ``sliding_window_pattern``), no soft-caps by default.
  """

  architecture: str
  keys: frozenset[str]
  biases: str = "tied"
  head_dim: str = "key"
  qk_norm: str | None = None
  sliding: str | None = None
  moe: MoEKeys | None = None
  clip_qkv: bool = False
  mlp_bias_key: bool = False
  gemma: int = 0

  @property
  def norm_offset(self) -> float:
    """What HF's RMSNorm adds to its stored weight (jaxeff stores the sum): 1 for Gemma, else 0."""
    return 1.0 if self.gemma else 0.0


_QWEN_MOE_LAYERS = frozenset({"decoder_sparse_step", "mlp_only_layers", "moe_intermediate_size", "norm_topk_prob"})
_TYPED_SLIDING = frozenset({"sliding_window", "layer_types"})

FAMILIES: dict[str, Family] = {
  "llama": Family("LlamaForCausalLM", frozenset({"attention_bias", "mlp_bias", "head_dim"}), mlp_bias_key=True),
  "mistral": Family("MistralForCausalLM", frozenset({"sliding_window", "head_dim"}), biases="none", sliding="all"),
  "qwen2": Family("Qwen2ForCausalLM", _TYPED_SLIDING, biases="qkv", head_dim="derived", sliding="typed"),
  "qwen3": Family(
    "Qwen3ForCausalLM", _TYPED_SLIDING | {"head_dim", "attention_bias"}, qk_norm="head", sliding="typed"
  ),
  "mixtral": Family(
    "MixtralForCausalLM",
    frozenset({"sliding_window", "head_dim", "num_local_experts", "num_experts_per_tok"}),
    biases="none",
    sliding="all",
    moe=MoEKeys(("num_local_experts",), "intermediate_size", norm_topk=True),
  ),
  "qwen2_moe": Family(
    "Qwen2MoeForCausalLM",
    _TYPED_SLIDING
    | _QWEN_MOE_LAYERS
    | {"qkv_bias", "num_experts", "num_experts_per_tok"}
    | {"shared_expert_intermediate_size"},
    biases="qkv",
    head_dim="derived",
    sliding="typed",
    moe=MoEKeys(("num_experts",), "moe_intermediate_size", "norm_topk_prob", shared=True, layer_select=True),
  ),
  "qwen3_moe": Family(
    "Qwen3MoeForCausalLM",
    _TYPED_SLIDING
    | _QWEN_MOE_LAYERS
    | {"head_dim", "attention_bias", "num_experts", "num_local_experts"}
    | {"num_experts_per_tok"},
    qk_norm="head",
    sliding="typed",
    moe=MoEKeys(("num_experts", "num_local_experts"), "moe_intermediate_size", "norm_topk_prob", layer_select=True),
  ),
  "olmoe": Family(
    "OlmoeForCausalLM",
    frozenset({"attention_bias", "clip_qkv", "num_experts", "num_experts_per_tok", "norm_topk_prob"}),
    head_dim="derived",
    qk_norm="full",
    clip_qkv=True,
    moe=MoEKeys(("num_experts",), "intermediate_size", "norm_topk_prob"),
  ),
}

_GEMMA_KEYS = frozenset(
  {
    "head_dim",
    "attention_bias",
    "hidden_activation",
    "query_pre_attn_scalar",
    "sliding_window",
    "layer_types",
    "final_logit_softcapping",
    "attn_logit_softcapping",
    "use_bidirectional_attention",
    "cache_implementation",
  }
)
FAMILIES["gemma2"] = Family("Gemma2ForCausalLM", _GEMMA_KEYS, sliding="gemma", gemma=2)
FAMILIES["gemma3_text"] = Family(
  "Gemma3ForCausalLM",
  _GEMMA_KEYS | {"rope_local_base_freq", "sliding_window_pattern", "_sliding_window_pattern"},
  qk_norm="head",
  sliding="gemma",
  gemma=3,
)

SUPPORTED_MODEL_TYPES = tuple(FAMILIES)
MOE_MODEL_TYPES = tuple(k for k, f in FAMILIES.items() if f.moe is not None)

# HF config keys that carry no modelling behaviour (bookkeeping, generation defaults, training-only knobs
# that are inert at inference). Everything else must be understood or the config is rejected.
INERT_HF_KEYS = frozenset(
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

COMMON_KEYS = frozenset(
  {
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
)

_ROPE_KEYS = {"rope_theta", "rope_type", "type", "factor", "low_freq_factor", "high_freq_factor"}
_ROPE_KEYS |= {"original_max_position_embeddings"}


# The type of every field jaxeff reads: JSON booleans are booleans (never the string "false"), ints are ints
# (never booleans or floats), floats are finite numbers; "?" marks a field that may be null.
_REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
FIELD_TYPES: dict[str, str] = {
  **dict.fromkeys(_REQUIRED, "int+"),
  "num_key_value_heads": "int+?",
  "max_position_embeddings": "int+",
  "head_dim": "int+?",
  "sliding_window": "id?",  # 0: no window (transformers writes 0 with use_sliding_window false)
  "max_window_layers": "int",
  "num_experts": "int",
  "num_local_experts": "int",
  "num_experts_per_tok": "int+",
  "moe_intermediate_size": "int+",
  "shared_expert_intermediate_size": "int?",
  "decoder_sparse_step": "id?",  # 0 reads as 1
  "bos_token_id": "id?",
  "eos_token_id": "ids?",
  "pad_token_id": "id?",
  "rms_norm_eps": "float+",
  "rope_theta": "float+",
  "clip_qkv": "float+?",
  "tie_word_embeddings": "bool",
  "attention_bias": "bool",
  "mlp_bias": "bool",
  "qkv_bias": "bool",
  "norm_topk_prob": "bool",
  "use_sliding_window": "bool",
  "hidden_act": "str",
  "hidden_activation": "str?",
  "query_pre_attn_scalar": "float+?",
  "final_logit_softcapping": "float+?",
  "attn_logit_softcapping": "float+?",
  "use_bidirectional_attention": "bool?",
  "rope_local_base_freq": "float+",
  "sliding_window_pattern": "int+?",
  "_sliding_window_pattern": "int+?",
  "layer_types": "strs?",
  "mlp_only_layers": "ints?",
  "rope_parameters": "dict?",
  "rope_scaling": "dict?",
}


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# kind -> (test of a non-null value, what the error says it must be)
_KINDS = {
  "int": (_is_int, "an integer"),
  "int+": (lambda v: _is_int(v) and v > 0, "a positive integer"),
  "id": (lambda v: _is_int(v) and v >= 0, "a non-negative integer"),
  "ids": (
    lambda v: (_is_int(v) and v >= 0) or (isinstance(v, list) and all(_is_int(x) and x >= 0 for x in v)),
    "a token id or a list of token ids",
  ),
  "float+": (lambda v: _is_number(v) and v > 0, "a finite positive number"),
  "bool": (lambda v: isinstance(v, bool), "true or false (a JSON boolean)"),
  "str": (lambda v: isinstance(v, str), "a string"),
  "strs": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings"),
  "ints": (lambda v: isinstance(v, list) and all(_is_int(x) for x in v), "a list of integers"),
  "dict": (lambda v: isinstance(v, dict), "an object"),
}


def _type_ok(v, kind: str) -> bool:
  return kind.endswith("?") if v is None else _KINDS[kind.rstrip("?")][0](v)


def field_type_problems(hf: Mapping[str, Any]) -> list[str]:
  """Every required field that is missing and every known field whose value has the wrong type, e.g.
  ``tie_word_embeddings='false'`` (a string, which Python would read as true).

  Example:
    >>> field_type_problems({"vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
    ...   "num_hidden_layers": 1, "tie_word_embeddings": "false"})
    ["missing required field 'num_attention_heads'", "tie_word_embeddings='false' must be true or false (a JSON boolean)"]
  """
  out = [f"missing required field {k!r}" for k in _REQUIRED if hf.get(k) is None]
  for k, kind in FIELD_TYPES.items():
    if k in hf and not (k in _REQUIRED and hf[k] is None) and not _type_ok(hf[k], kind):
      null = " or null" if kind.endswith("?") else ""
      out.append(f"{k}={hf[k]!r} must be {_KINDS[kind.rstrip('?')][1]}{null}")
  return out


def family(model_type: str | None) -> Family:
  """The table row of ``model_type``; ``UnsupportedConfigError`` naming the supported ones otherwise."""
  if not isinstance(model_type, str) or model_type not in FAMILIES:
    raise UnsupportedConfigError(
      f"unsupported architecture model_type={model_type!r}; jaxeff supports {', '.join(SUPPORTED_MODEL_TYPES)}"
    )
  return FAMILIES[model_type]


def _rope(hf: dict, problems: list[str]) -> tuple[float, RopeScaling | None]:
  rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
  theta = float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))
  rope_type = rope.get("rope_type", rope.get("type", "default"))
  scaling = None
  if rope_type == "llama3":
    try:
      scaling = RopeScaling(
        float(rope["factor"]),
        float(rope["low_freq_factor"]),
        float(rope["high_freq_factor"]),
        int(rope.get("original_max_position_embeddings", hf.get("max_position_embeddings", 8192))),
      )
    except KeyError as e:
      problems.append(f"rope_parameters for llama3 lacks {e.args[0]!r}")
  elif rope_type == "linear":
    if not isinstance(rope.get("factor"), (int, float)) or isinstance(rope.get("factor"), bool) or rope["factor"] <= 0:
      problems.append(f"rope_parameters for linear needs a positive factor, got {rope.get('factor')!r}")
    else:
      scaling = RopeScaling(float(rope["factor"]), rope_type="linear")
  elif rope_type != "default":
    problems.append(f"rope_type={rope_type!r} (only 'default', 'llama3' and 'linear' are implemented)")
  extra = sorted(set(rope) - _ROPE_KEYS)
  if extra:
    problems.append(f"unsupported rope_parameters fields: {', '.join(extra)}")
  return theta, scaling


def _read_sliding(fam: Family, hf: dict, n_layers: int) -> dict[str, Any]:
  if fam.sliding == "all":
    return {"sliding_window": int(hf["sliding_window"]) if hf.get("sliding_window") else None}
  if fam.sliding == "typed" and hf.get("use_sliding_window", False) and hf.get("sliding_window"):
    types = hf.get("layer_types")
    if types is None:
      mwl = int(hf.get("max_window_layers", n_layers))
      types = [ATTENTION_SLIDING if i >= mwl else ATTENTION_FULL for i in range(n_layers)]
    if ATTENTION_SLIDING in types:
      return {"sliding_window": int(hf["sliding_window"]), "layer_types": tuple(types)}
  return {}


def gemma_layer_types(n_layers: int, pattern: int = 6) -> tuple[str, ...]:
  """Gemma 3's layer pattern: every ``pattern``-th layer global, the others local (transformers' default for a
  config without ``layer_types``, and llama.cpp's fixed layout for GGUF files).

  Example:
    >>> gemma_layer_types(6, 3)
    ('sliding_attention', 'sliding_attention', 'full_attention', 'sliding_attention', 'sliding_attention', 'full_attention')
  """
  return tuple(ATTENTION_SLIDING if (i + 1) % pattern else ATTENTION_FULL for i in range(n_layers))


def _read_gemma(hf: dict, n_layers: int, problems: list[str], version: int = 3) -> dict[str, Any]:
  """Gemma's fields. Gemma 3: RoPE per layer type (``rope_parameters: {full_attention: .., sliding_attention:
  ..}``, or the legacy ``rope_theta`` / ``rope_local_base_freq`` / ``rope_scaling``), the layer pattern
  (``layer_types``, else every ``sliding_window_pattern``-th layer global, 6 by default). Gemma 2: one RoPE
  base, every other layer global by default. Both: the window, the attention scalar and the soft-caps (a key
  left out takes the default of ``Gemma2Config`` / ``Gemma3TextConfig``: 30 / 50 on Gemma 2, none on Gemma 3;
  an explicit null turns a cap off)."""
  rp = hf.get("rope_parameters") or {}
  if version == 2:
    glob, loc = dict(rp or hf.get("rope_scaling") or {}), None
  elif "full_attention" in rp or "sliding_attention" in rp:
    glob, loc = dict(rp.get("full_attention") or {}), dict(rp.get("sliding_attention") or {})
  else:
    glob, loc = dict(rp or hf.get("rope_scaling") or {}), {}
  glob.setdefault("rope_theta", hf.get("rope_theta", 10_000.0 if version == 2 else 1_000_000.0))
  theta, scaling = _rope(
    {"rope_parameters": glob, "max_position_embeddings": hf.get("max_position_embeddings")}, problems
  )
  if loc is not None:
    loc.setdefault("rope_theta", hf.get("rope_local_base_freq", 10_000.0))
    if loc.get("rope_type", loc.get("type", "default")) != "default" or set(loc) - {"rope_type", "type", "rope_theta"}:
      problems.append(f"rope_parameters.sliding_attention={loc} (the local layers' RoPE must be the default kind)")
  if hf.get("use_bidirectional_attention"):
    problems.append("use_bidirectional_attention=True (jaxeff's decoders are causal)")
  types = hf.get("layer_types")
  if types is None:
    pattern = 2 if version == 2 else hf.get("sliding_window_pattern") or hf.get("_sliding_window_pattern") or 6
    types = gemma_layer_types(n_layers, int(pattern))
  window = hf.get("sliding_window", 4096)
  if ATTENTION_SLIDING in types and not window:
    problems.append("layer_types has sliding_attention layers but sliding_window is null")
  sliding = ATTENTION_SLIDING in types and bool(window)
  qpas = hf.get("query_pre_attn_scalar", 256)
  cap = hf.get("final_logit_softcapping", 30.0 if version == 2 else None)
  attn_cap = hf.get("attn_logit_softcapping", 50.0 if version == 2 else None)
  return dict(
    rope_theta=float(theta),
    rope_scaling=scaling,
    rope_local_theta=float(loc["rope_theta"]) if sliding and loc is not None else None,
    sliding_window=int(window) if sliding else None,
    layer_types=tuple(types) if sliding else None,
    query_pre_attn_scalar=float(qpas) if qpas is not None else None,
    final_logit_softcap=float(cap) if cap is not None else None,
    attn_logit_softcap=float(attn_cap) if attn_cap is not None else None,
    post_norms=True,
    embed_scale=True,
  )


def _read_moe(fam: Family, hf: dict, n_layers: int) -> dict[str, Any]:
  m = fam.moe
  if m is None:
    return {}
  n_exp = int(next((hf[k] for k in m.experts if hf.get(k)), 0))
  out: dict[str, Any] = dict(
    n_experts=n_exp, experts_per_token=int(hf.get("num_experts_per_tok", 2)), d_expert=int(hf[m.width])
  )
  out["norm_topk"] = True if m.norm_topk is True else bool(hf.get(m.norm_topk, False))
  if m.shared and int(hf.get("shared_expert_intermediate_size") or 0) > 0:
    out.update(d_shared=int(hf["shared_expert_intermediate_size"]), shared_gate=True)
  if m.layer_select:
    step = int(hf.get("decoder_sparse_step", 1) or 1)
    only = set(hf.get("mlp_only_layers") or [])
    layers = tuple(i not in only and n_exp > 0 and (i + 1) % step == 0 for i in range(n_layers))
    out["moe_layers"] = None if all(layers) else layers
  return out


def hf_to_fields(hf: Mapping[str, Any] | Any) -> dict[str, Any]:
  """``ModelConfig`` keyword arguments for a HF ``config.json`` dict (or a ``PretrainedConfig``).

  Raises:
    UnsupportedConfigError: listing every field (by name) whose value jaxeff does not implement, e.g.
      ``hidden_act='gelu'``, ``mlp_bias=True``, a ``rope_type`` other than default/llama3,
      ``quantization_config``.

  Example:
    >>> hf_to_fields({"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
    ...   "num_hidden_layers": 1, "num_attention_heads": 2})["head_dim"]
    4
  """
  if not isinstance(hf, Mapping):
    if not hasattr(hf, "to_dict"):
      raise UnsupportedConfigError(f"a HF config must be a JSON object, got {type(hf).__name__}")
    hf = hf.to_dict()
  hf = dict(hf)
  mt = hf.get("model_type")
  fam = family(mt)
  problems = field_type_problems(hf)
  if problems:  # the values below cannot be trusted; report every type problem at once
    raise UnsupportedConfigError(f"invalid {mt} config: " + "; ".join(problems))
  unknown = sorted(k for k in hf if k not in INERT_HF_KEYS | COMMON_KEYS | fam.keys)
  if unknown:
    problems.append(f"unsupported fields for {mt}: {', '.join(unknown)}")
  if fam.gemma:  # Gemma 3 names it hidden_activation (hidden_act is Gemma 1's, still honoured by transformers)
    act_key = "hidden_activation" if hf.get("hidden_activation") is not None else "hidden_act"
    act = hf.get(act_key, "gelu_pytorch_tanh")
    if act not in _HF_ACTIVATIONS:
      problems.append(f"{act_key}={act!r} (implemented: {', '.join(_HF_ACTIVATIONS)})")
  else:
    act = hf.get("hidden_act", "silu")
    if act != "silu":
      problems.append(f"hidden_act={act!r} (only 'silu' SwiGLU is implemented)")
  if hf.get("mlp_bias"):
    problems.append("mlp_bias=True (MLP biases are not implemented)")
  if fam.gemma:
    gemma = _read_gemma(hf, int(hf["num_hidden_layers"]), problems, fam.gemma)
    rope_theta, rope_scaling = gemma.pop("rope_theta"), gemma.pop("rope_scaling")
  else:
    gemma = {}
    rope_theta, rope_scaling = _rope(hf, problems)
  if problems:
    raise UnsupportedConfigError("; ".join(problems))

  n_heads, d_model, n_layers = int(hf["num_attention_heads"]), int(hf["hidden_size"]), int(hf["num_hidden_layers"])
  if fam.biases == "qkv":
    qkv_bias, o_bias = bool(hf.get("qkv_bias", True)), False
  else:
    qkv_bias = o_bias = fam.biases == "tied" and bool(hf.get("attention_bias", False))
  eos = hf.get("eos_token_id")
  return dict(
    vocab_size=int(hf["vocab_size"]),
    d_model=d_model,
    n_layers=n_layers,
    n_heads=n_heads,
    n_kv_heads=int(hf.get("num_key_value_heads") or n_heads),
    head_dim=int(hf.get("head_dim") or (256 if fam.gemma else d_model // n_heads)),
    d_ff=int(hf["intermediate_size"]),
    rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
    rope_theta=rope_theta,
    rope_scaling=rope_scaling,
    max_position_embeddings=int(hf.get("max_position_embeddings", 4096)),
    tie_embeddings=bool(hf.get("tie_word_embeddings", fam.gemma)),  # Gemma ties by default
    qkv_bias=qkv_bias,
    o_bias=o_bias,
    qk_norm=fam.qk_norm is not None,
    qk_norm_scope=fam.qk_norm or "head",
    clip_qkv=float(hf["clip_qkv"]) if fam.clip_qkv and hf.get("clip_qkv") is not None else None,
    model_type=mt,
    **_read_sliding(fam, hf, n_layers),
    **_read_moe(fam, hf, n_layers),
    **gemma,
    mlp_activation=_HF_ACTIVATIONS.get(act, "silu"),
    bos_token_id=hf.get("bos_token_id"),
    eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
    pad_token_id=hf.get("pad_token_id"),
  )


def _problems(fam: Family, c) -> list[str]:
  """The settings of config ``c`` that ``fam`` cannot express."""
  mt, out = c.model_type, []
  if (fam.moe is not None) != bool(c.n_experts):
    out.append(f"model_type={mt!r} with n_experts={c.n_experts}: MoE families need experts, dense ones none")
  m = fam.moe
  if m is not None:
    if m.norm_topk is True and not c.norm_topk:
      out.append(f"{mt} always renormalises its top-k weights (norm_topk=True)")
    if c.d_shared and not m.shared:
      out.append(f"{mt} has no shared expert")
    if c.d_shared and m.shared and not c.shared_gate:
      out.append(f"{mt} gates its shared expert (shared_gate=True)")
    if c.moe_layers is not None and not m.layer_select:
      out.append(f"{mt} has MoE in every layer")
  if c.qk_norm != (fam.qk_norm is not None) or (c.qk_norm and c.qk_norm_scope != fam.qk_norm):
    out.append(f"qk_norm={c.qk_norm} (scope {c.qk_norm_scope!r}) cannot be expressed by model_type={mt!r}")
  if fam.biases == "qkv" and c.o_bias:
    out.append(f"{mt} has q/k/v biases and no output bias (o_bias=False)")
  if fam.biases == "qkv" and not c.qkv_bias and "qkv_bias" not in fam.keys:
    out.append(f"{mt} always has q/k/v biases (qkv_bias=True)")
  if fam.biases == "none" and (c.qkv_bias or c.o_bias):
    out.append(f"{mt} has no attention biases")
  if fam.biases == "tied" and c.qkv_bias != c.o_bias:
    out.append(f"{mt} ties q/k/v and o biases (attention_bias); got qkv_bias={c.qkv_bias}, o_bias={c.o_bias}")
  if fam.sliding is None and c.sliding_window is not None:
    out.append(f"{mt} has no sliding window")
  if fam.sliding == "all" and c.layer_types is not None and ATTENTION_FULL in c.layer_types:
    out.append(f"{mt} applies its sliding window to every layer")
  if c.clip_qkv is not None and not fam.clip_qkv:
    out.append(f"clip_qkv is an OLMoE feature, not {mt}")
  gemma_only = {
    "post_norms": c.post_norms,
    "embed_scale": c.embed_scale,
    "query_pre_attn_scalar": c.query_pre_attn_scalar is not None,
    "rope_local_theta": c.rope_local_theta is not None,
    "final_logit_softcap": c.final_logit_softcap is not None,
    "attn_logit_softcap": c.attn_logit_softcap is not None,
    "mlp_activation='gelu_tanh'": c.mlp_activation == "gelu_tanh",
  }
  if not fam.gemma and any(gemma_only.values()):
    out.append(f"{', '.join(k for k, v in gemma_only.items() if v)}: Gemma features, not {mt}'s")
  if fam.gemma and not (c.post_norms and c.embed_scale):
    out.append(f"{mt} always has sandwich norms and a scaled embedding (post_norms=True, embed_scale=True)")
  if fam.gemma == 2 and c.rope_local_theta is not None:
    out.append(f"{mt} has one RoPE base on every layer (rope_local_theta is Gemma 3's)")
  if (
    fam.gemma == 3 and c.rope_local_theta is None and c.layer_types is not None and ATTENTION_SLIDING in c.layer_types
  ):
    out.append(f"{mt}'s sliding layers have their own RoPE base (set rope_local_theta)")
  if fam.head_dim == "derived" and c.head_dim * c.n_heads != c.d_model:
    out.append(f"{mt} derives head_dim = hidden_size / heads; {c.head_dim} does not match")
  return out


def _int_if_whole(x: float) -> int | float:
  """transformers types ``query_pre_attn_scalar`` as an int: write 256.0 as 256."""
  return int(x) if float(x).is_integer() else x


def fields_to_hf(c) -> dict[str, Any]:
  """The HF ``config.json`` dict that transformers' PyTorch class for ``c.model_type`` loads.

  Raises:
    UnsupportedConfigError: listing every setting of ``c`` that the family cannot express (e.g. q/k norm on
      Llama, an output bias on Qwen2).
  """
  fam = family(c.model_type)
  problems = _problems(fam, c)
  if problems:
    raise UnsupportedConfigError("; ".join(problems))
  rope: dict[str, Any] = {"rope_theta": c.rope_theta, "rope_type": "default"}
  if c.rope_scaling is not None and c.rope_scaling.rope_type == "linear":
    rope.update(rope_type="linear", factor=c.rope_scaling.factor)
  elif c.rope_scaling is not None:
    rope.update(dataclasses.asdict(c.rope_scaling))
  hf: dict[str, Any] = {
    "architectures": [fam.architecture],
    "model_type": c.model_type,
    "vocab_size": c.vocab_size,
    "hidden_size": c.d_model,
    "intermediate_size": c.d_ff,
    "num_hidden_layers": c.n_layers,
    "num_attention_heads": c.n_heads,
    "num_key_value_heads": c.n_kv_heads,
    "hidden_act": "silu",
    "max_position_embeddings": c.max_position_embeddings,
    "rms_norm_eps": c.rms_norm_eps,
    "tie_word_embeddings": c.tie_embeddings,
    "rope_parameters": rope,
    "bos_token_id": c.bos_token_id,
    "eos_token_id": list(c.eos_token_id) if isinstance(c.eos_token_id, tuple) else c.eos_token_id,
    "pad_token_id": c.pad_token_id,
  }
  if fam.gemma:
    del hf["hidden_act"]
    local = {"rope_theta": c.rope_local_theta or c.rope_theta, "rope_type": "default"}
    types = c.layer_types or ((ATTENTION_SLIDING if c.sliding_window else ATTENTION_FULL),) * c.n_layers
    hf.update(
      hidden_activation="gelu_pytorch_tanh" if c.mlp_activation == "gelu_tanh" else c.mlp_activation,
      rope_parameters=rope if fam.gemma == 2 else {"full_attention": rope, "sliding_attention": local},
      query_pre_attn_scalar=_int_if_whole(
        c.query_pre_attn_scalar if c.query_pre_attn_scalar is not None else c.head_dim
      ),
      sliding_window=c.sliding_window,
      layer_types=list(types),
      final_logit_softcapping=c.final_logit_softcap,
      attn_logit_softcapping=c.attn_logit_softcap,
      use_bidirectional_attention=False,
    )
  if fam.head_dim == "key":
    hf["head_dim"] = c.head_dim
  if "attention_bias" in fam.keys:
    hf["attention_bias"] = c.qkv_bias
  if "qkv_bias" in fam.keys:
    hf["qkv_bias"] = c.qkv_bias
  if fam.mlp_bias_key:
    hf["mlp_bias"] = False
  if fam.clip_qkv:
    hf["clip_qkv"] = c.clip_qkv
  if fam.sliding == "all":
    hf["sliding_window"] = c.sliding_window
  elif fam.sliding == "typed":
    if c.sliding_window is not None:
      types = c.layer_types or (ATTENTION_SLIDING,) * c.n_layers
      hf.update(use_sliding_window=True, sliding_window=c.sliding_window, layer_types=list(types))
      hf["max_window_layers"] = next((i for i, t in enumerate(types) if t == ATTENTION_SLIDING), c.n_layers)
    else:
      hf.update(use_sliding_window=False, sliding_window=None, layer_types=[ATTENTION_FULL] * c.n_layers)
  m = fam.moe
  if m is not None:
    hf.update({m.experts[0]: c.n_experts, "num_experts_per_tok": c.experts_per_token, m.width: c.d_expert})
    if m.norm_topk is not True:
      hf[m.norm_topk] = c.norm_topk
    if m.shared:
      hf["shared_expert_intermediate_size"] = c.d_shared
    if m.layer_select:
      layers = c.moe_layers or (True,) * c.n_layers
      hf.update(decoder_sparse_step=1, mlp_only_layers=[i for i, x in enumerate(layers) if not x])
  return hf
