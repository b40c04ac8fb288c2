"""The jaxeff decoder: pre-norm RMSNorm, GQA attention with RoPE, SwiGLU MLP; a pure forward.

Parameters are a plain nested dict (the one table below). Every surgery in jaxeff (CommonKV factors, CAMERA
pruning, Judge Q tokens, quantized experts) is a pure function ``(config, params) -> (config, params)`` over
this table.

=======================================  ======================  =====================================
leaf                                     shape                   logical axes
=======================================  ======================  =====================================
``embed``                                [V, D]                  (vocab, embed)
``layers[i].attn_norm``                  [D]                     (norm,)
``layers[i].attn.q``                     [N, H, D]               (heads, head_dim, embed)
``layers[i].attn.k`` / ``.v``            [K, H, D]               (kv_heads, head_dim, embed)
``layers[i].attn.o``                     [D, N, H]               (embed, heads, head_dim)
``layers[i].attn.q_bias``                [N, H]  (qkv_bias)      (heads, head_dim)
``layers[i].attn.k_bias`` / ``.v_bias``  [K, H]  (qkv_bias)      (kv_heads, head_dim)
``layers[i].attn.o_bias``                [D]     (o_bias)        (norm,)
``layers[i].attn.q_norm`` / ``.k_norm``  [H]     (qk_norm)       (head_dim,)
``layers[i].mlp_norm``                   [D]                     (norm,)
``layers[i].attn_post_norm``             [D]  (post_norms)       (norm,)   Gemma: on the attention output
``layers[i].mlp_post_norm``              [D]  (post_norms)       (norm,)   Gemma: on the MLP output
``layers[i].mlp.gate`` / ``.up``         [F, D]                  (mlp, embed)
``layers[i].mlp.down``                   [D, F]                  (embed, mlp)
MoE layers (``config.is_moe(i)``):
``layers[i].mlp.router``                 [E, D]                  (experts, embed)
``layers[i].mlp.gate`` / ``.up``         [E, I, D]               (experts, mlp, embed)
``layers[i].mlp.down``                   [E, D, I]               (experts, embed, mlp)
``layers[i].mlp.shared.{gate,up,down}``  [S, D], [D, S]          (shared expert, ``d_shared``)
``layers[i].mlp.shared_gate``            [1, D]  (shared_gate)   (None, embed)
``final_norm``                           [D]                     (norm,)
``lm_head``                              [V, D]  (untied only)   (vocab, embed)
Leaves that surgery writes (each documented where it is written):
``layers[i].attn.kv_down``               [r, D]                  CommonKV: A, shared by its group
``layers[i].attn.k_up`` / ``.v_up``      [K, H, r]               CommonKV: B_k, B_v (``k``/``v`` gone)
``layers[i].mlp.owner``                  [C]                     CAMERA-P compacted MoE: expert of each
                                                                 kept channel (E = shared expert)
``layers[i].mlp.gate``/``.up``/``.down`` [C, D], [D, C]          CAMERA-P compacted: kept channels only
``layers[i].mlp.packed``                 list of groups          CAMERA-Q: per bit width, packed codes,
                                                                 scales and ``owner`` (``moe.quant``)
=======================================  ======================  =====================================

A layer's attention is a latent layer when it holds ``kv_down`` (``jaxeff.models.latent``; the decoder dispatches
through ``register_projection`` as it does for feed-forwards through ``register_feed_forward``); its MLP is
compacted when it holds ``owner`` and packed when it holds ``packed`` (``jaxeff.models.moe``). Judge Q's soft
tokens are not a leaf of this table: they extend ``embed`` for one prefill (``jaxeff.kvcache.judgeq``).

Weights are stored output-major, ``[out..., in]``, exactly as PyTorch ``nn.Linear`` stores them, with the
head axes split out. Every HF tensor is therefore a *reshape* of its jaxeff leaf: checkpoints load by
memory-mapping with no transpose (zero-copy on CPU when aligned), and XLA contracts over the last axis at no
cost. ``layers`` is a tuple (per-layer shapes may differ after surgery). Shapes: B batch, T tokens,
D d_model, N/K query/kv heads, H head_dim, F d_ff, V vocab.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from jaxeff import sharding as shard_lib
from jaxeff.attention.dense import Dense
from jaxeff.config import ModelConfig, rope_inv_freq
from jaxeff.models import latent as latent_lib
from jaxeff.models import mla as mla_lib
from jaxeff.models.layers import finish_head
from jaxeff.models.layers import linear as linear  # the building blocks stay importable from here
from jaxeff.models.layers import qk_norm as qk_norm
from jaxeff.models.layers import rms_norm as rms_norm
from jaxeff.models.layers import rope as rope


@dataclasses.dataclass(frozen=True)
class ParamSpec:
  shape: tuple[int, ...]
  axes: tuple[str | None, ...]
  init: str  # 'normal' | 'ones' | 'zeros'


def param_specs(config: ModelConfig) -> dict[str, Any]:
  """The parameter table as a pytree of ``ParamSpec`` (shape, logical axes, initialiser)."""
  D, N, K, H, F, V = (
    config.d_model,
    config.n_heads,
    config.n_kv_heads,
    config.head_dim,
    config.d_ff,
    config.vocab_size,
  )

  def moe_mlp_specs():
    E, I, S = config.n_experts, config.d_expert, config.d_shared
    m = {
      "router": ParamSpec((E, D), ("experts", "embed"), "normal"),
      "gate": ParamSpec((E, I, D), ("experts", "mlp", "embed"), "normal"),
      "up": ParamSpec((E, I, D), ("experts", "mlp", "embed"), "normal"),
      "down": ParamSpec((E, D, I), ("experts", "embed", "mlp"), "normal"),
    }
    if S:
      m["shared"] = {
        "gate": ParamSpec((S, D), ("mlp", "embed"), "normal"),
        "up": ParamSpec((S, D), ("mlp", "embed"), "normal"),
        "down": ParamSpec((D, S), ("embed", "mlp"), "normal"),
      }
      if config.shared_gate:
        m["shared_gate"] = ParamSpec((1, D), (None, "embed"), "normal")
    return m

  def layer(i):
    attn = {
      "q": ParamSpec((N, H, D), ("heads", "head_dim", "embed"), "normal"),
      "k": ParamSpec((K, H, D), ("kv_heads", "head_dim", "embed"), "normal"),
      "v": ParamSpec((K, H, D), ("kv_heads", "head_dim", "embed"), "normal"),
      "o": ParamSpec((D, N, H), ("embed", "heads", "head_dim"), "normal"),
    }
    if config.qkv_bias:
      attn["q_bias"] = ParamSpec((N, H), ("heads", "head_dim"), "zeros")
      attn["k_bias"] = ParamSpec((K, H), ("kv_heads", "head_dim"), "zeros")
      attn["v_bias"] = ParamSpec((K, H), ("kv_heads", "head_dim"), "zeros")
    if config.o_bias:
      attn["o_bias"] = ParamSpec((D,), ("norm",), "zeros")
    if config.qk_norm and config.qk_norm_scope == "full":  # OLMoE: over the whole projection
      attn["q_norm"] = ParamSpec((N, H), ("heads", "head_dim"), "ones")
      attn["k_norm"] = ParamSpec((K, H), ("kv_heads", "head_dim"), "ones")
    elif config.qk_norm:
      attn["q_norm"] = ParamSpec((H,), ("head_dim",), "ones")
      attn["k_norm"] = ParamSpec((H,), ("head_dim",), "ones")
    post = {}
    if config.post_norms:  # Gemma's sandwich norms on each sub-block's output
      post = {
        "attn_post_norm": ParamSpec((D,), ("norm",), "ones"),
        "mlp_post_norm": ParamSpec((D,), ("norm",), "ones"),
      }
    return {
      "attn_norm": ParamSpec((D,), ("norm",), "ones"),
      "attn": attn,
      "mlp_norm": ParamSpec((D,), ("norm",), "ones"),
      **post,
      "mlp": moe_mlp_specs()
      if config.is_moe(i)
      else {
        "gate": ParamSpec((F, D), ("mlp", "embed"), "normal"),
        "up": ParamSpec((F, D), ("mlp", "embed"), "normal"),
        "down": ParamSpec((D, F), ("embed", "mlp"), "normal"),
      },
    }

  specs: dict[str, Any] = {
    "embed": ParamSpec((V, D), ("vocab", "embed"), "normal"),
    "layers": tuple(layer(i) for i in range(config.n_layers)),
    "final_norm": ParamSpec((D,), ("norm",), "ones"),
  }
  if not config.tie_embeddings:
    specs["lm_head"] = ParamSpec((V, D), ("vocab", "embed"), "normal")
  return specs


_is_spec = lambda x: isinstance(x, ParamSpec)


def param_logical_axes(config: ModelConfig) -> Any:
  """Pytree of logical-axis tuples matching ``init_params(config, ...)``."""
  return jax.tree.map(lambda s: s.axes, param_specs(config), is_leaf=_is_spec)


def param_shapes(config: ModelConfig, dtype: Any = jnp.float32) -> Any:
  """Pytree of ``jax.ShapeDtypeStruct`` for the parameters (no allocation; full-size presets are fine)."""
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, dtype), param_specs(config), is_leaf=_is_spec)


def init_params(config: ModelConfig, key: jax.Array, dtype: Any = jnp.float32, std: float = 0.02) -> dict[str, Any]:
  """Random parameters: N(0, std^2) matrices, unit norms, zero biases.

  Example:
    >>> params = init_params(ModelConfig.tiny(), jax.random.key(0))
    >>> params['layers'][0]['attn']['q'].shape
    (4, 16, 64)
  """
  specs = param_specs(config)
  leaves, treedef = jax.tree.flatten(specs, is_leaf=_is_spec)
  keys = jax.random.split(key, len(leaves))
  out = []
  for spec, k in zip(leaves, keys):
    if spec.init == "normal":
      out.append((std * jax.random.normal(k, spec.shape, jnp.float32)).astype(dtype))
    elif spec.init == "ones":
      out.append(jnp.ones(spec.shape, dtype))
    else:
      out.append(jnp.zeros(spec.shape, dtype))
  return jax.tree.unflatten(treedef, out)


def count_params(params: Any) -> int:
  """Number of scalars in a parameter pytree (embeddings included)."""
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def gate_activation(config: ModelConfig) -> Callable[[Array], Array]:
  """The gated MLP's activation: SiLU (SwiGLU) or tanh-approximated GELU (Gemma's GeGLU)."""
  return jax.nn.silu if config.mlp_activation == "silu" else functools.partial(jax.nn.gelu, approximate=True)


def swiglu_mlp(mlp_params: dict[str, Array], x_btd: Array, config: ModelConfig) -> Array:
  """down( act(x W_gate^T) * (x W_up^T) ), act = SiLU (SwiGLU) or tanh-GELU (GeGLU, ``config.mlp_activation``)."""
  g = linear(x_btd, mlp_params["gate"])
  u = linear(x_btd, mlp_params["up"])
  h = shard_lib.constrain(gate_activation(config)(g) * u, ("batch", "seq", "mlp"))
  return linear(h, mlp_params["down"])


def feed_forward(layer_params: dict[str, Any], x_btd: Array, config: ModelConfig) -> Array:
  """The one MLP entry point of a block: dispatches on the parameter table (dense SwiGLU now; MoE later)."""
  mlp = layer_params["mlp"]
  kind = "moe" if "router" in mlp else "swiglu"
  if kind not in _FEED_FORWARD_IMPLS:
    raise NotImplementedError(f"no feed-forward implementation registered for {kind!r}")
  return _FEED_FORWARD_IMPLS[kind](mlp, x_btd, config)


def _moe(mlp_params, x_btd, config):
  from jaxeff.models.moe import moe_mlp

  return moe_mlp(mlp_params, x_btd, config)


_FEED_FORWARD_IMPLS: dict[str, Callable[..., Array]] = {"swiglu": swiglu_mlp, "moe": _moe}


def register_feed_forward(kind: str, fn: Callable[..., Array]) -> None:
  """Register an MLP implementation; ``layers[i].mlp`` holding a ``router`` selects ``'moe'``."""
  _FEED_FORWARD_IMPLS[kind] = fn


def qkv_projection(attn: dict[str, Array], h_btd: Array, positions_bt: Array, config: ModelConfig, inv_freq: Array):
  """Project to q [B,T,N,H], k, v [B,T,K,H]; biases, q/k RMSNorm (Qwen3), clamp and RoPE applied (``finish_head``)."""
  eps, clip = config.rms_norm_eps, config.clip_qkv
  q = finish_head(linear(h_btd, attn["q"]), attn.get("q_bias"), attn.get("q_norm"), eps, clip, positions_bt, inv_freq)
  k = finish_head(linear(h_btd, attn["k"]), attn.get("k_bias"), attn.get("k_norm"), eps, clip, positions_bt, inv_freq)
  v = finish_head(linear(h_btd, attn["v"]), attn.get("v_bias"), None, eps, clip)
  return q, k, v


def project(attn: dict[str, Array], h_btd: Array, positions_bt: Array, config: ModelConfig, inv_freq: Array):
  """The attention input projection of one layer, dispatched on its parameter table: the first registered
  projection whose ``matches(attn)`` holds (the shared-latent K/V of ``jaxeff.models.latent``), else
  ``qkv_projection``. Returns q, k, v and the layer's record for the cache (``None`` for a plain layer).

  With ``config.query_pre_attn_scalar`` (Gemma) q comes back multiplied by sqrt(H / query_pre_attn_scalar), so
  every backend's softmax(q.k / sqrt(H)) is the model's softmax(q.k / sqrt(query_pre_attn_scalar))."""
  fn = next((fn for matches, fn in _PROJECTIONS if matches(attn)), None)
  if fn is None:
    q, k, v, record = (*qkv_projection(attn, h_btd, positions_bt, config, inv_freq), None)
  else:
    q, k, v, record = fn(attn, h_btd, positions_bt, config, inv_freq)
  if config.query_scale != 1.0:  # Gemma's query_pre_attn_scalar, folded into q for every backend and cache
    q = q * jnp.asarray(config.query_scale, q.dtype)
  return q, k, v, record


_PROJECTIONS: list[tuple[Callable[[dict], bool], Callable[..., tuple]]] = [
  (latent_lib.is_latent_layer, latent_lib.latent_projection),
  (mla_lib.is_mla_layer, mla_lib.mla_projection),
]


def register_projection(matches: Callable[[dict], bool], fn: Callable[..., tuple]) -> None:
  """Register an attention input projection ``fn(attn, h, positions, config, inv_freq) -> (q, k, v, record)``
  for the layers whose attention parameters satisfy ``matches`` (checked before the ones registered earlier)."""
  _PROJECTIONS.insert(0, (matches, fn))


def layer_inv_freqs(config: ModelConfig) -> list[Array]:
  """RoPE inverse frequencies of every layer (Gemma 3's sliding layers have their own base; one array per
  distinct base, shared)."""
  distinct: dict[bytes, Array] = {}
  out = []
  for i in range(config.n_layers):
    inv = rope_inv_freq(config, i)
    out.append(distinct.setdefault(inv.tobytes(), jnp.asarray(inv)))
  return out


def embed_tokens(params: dict[str, Any], tokens_bt: Array, config: ModelConfig) -> Array:
  """Token embeddings [B, T, D]; times sqrt(D) (rounded to the embedding dtype, as HF) when
  ``config.embed_scale`` (Gemma)."""
  x = jnp.take(params["embed"], tokens_bt, axis=0)
  if config.embed_scale:
    x = x * jnp.asarray(config.d_model**0.5, x.dtype)
  return x


def post_norm(layer_params: dict[str, Any], name: str, y: Array, config: ModelConfig) -> Array:
  """Gemma's sandwich norm of a sub-block's output (``attn_post_norm`` / ``mlp_post_norm``); ``y`` unchanged in a
  layer without one."""
  w = layer_params.get(name)
  return y if w is None else rms_norm(y, w, config.rms_norm_eps)


def soft_cap(logits: Array, config: ModelConfig) -> Array:
  """c * tanh(logits / c) with c = ``config.final_logit_softcap`` (Gemma); unchanged when it is ``None``."""
  c = config.final_logit_softcap
  return logits if c is None else c * jnp.tanh(logits / c)


def check_softcap(config: ModelConfig, attention: Any, cache: Any = None) -> dict[str, float]:
  """The keyword every attention call of ``config``'s model takes: ``{"softcap": c}`` when the model caps its
  attention logits (``config.attn_logit_softcap``, scores c * tanh(s / c)), else ``{}``.

  Raises:
    ValueError: the model caps its attention logits and the backend or the cache does not implement it (does
      not declare ``supports_softcap``): refused before any work, naming both, rather than attending uncapped.

  Example:
    >>> cfg = ModelConfig.tiny(model_type="gemma3_text", post_norms=True, embed_scale=True, attn_logit_softcap=50.0)
    >>> check_softcap(cfg, Dense())
    {'softcap': 50.0}
  """
  c = config.attn_logit_softcap
  if c is None:
    return {}
  unsupported = [
    type(x).__name__ for x in (attention, cache) if x is not None and not getattr(x, "supports_softcap", False)
  ]
  if unsupported:
    raise ValueError(
      f"this model caps its attention logits (attn_logit_softcap={c}) and {', '.join(unsupported)} does not "
      "implement the cap: use Dense / TrainingAttention with FullCache, Windowed, an eviction press or Quantized"
    )
  return {"softcap": float(c)}


def forward(
  params: dict[str, Any],
  tokens_bt: Int[Array, "B T"],
  positions_bt: Int[Array, "B T"],
  cache: Any = None,
  *,
  config: ModelConfig,
  attention: Callable[..., Array] = Dense(),
  is_prefill: bool | None = None,
  logits_index: Int[Array, " B"] | None = None,
  input_offset: Float[Array, "B T D"] | None = None,
  chunk_offset: int | None = None,
  return_hidden: bool = False,
) -> tuple[Float[Array, "B T V"], Any]:
  r"""Pure forward pass; returns float32 logits and the new cache.

  For each block: x += Attn(RMSNorm(x)); x += MLP(RMSNorm(x)); then logits = RMSNorm(x) W_head. Gemma 3
  (``config.post_norms``): x += RMSNorm(Attn(RMSNorm(x))); x += RMSNorm(MLP(RMSNorm(x))), with embeddings times
  sqrt(D), per-layer-type RoPE bases, q scaled for ``query_pre_attn_scalar`` and logits soft-capped (attention
  logits too where ``attn_logit_softcap`` is set; ``check_softcap`` refuses a backend or cache without the cap).

  Attention routes by mode:

  * ``cache is None`` (training / scoring): the backend attends within the chunk.
  * prefill (``is_prefill``, default ``T > 1``): the backend attends within the chunk (ProxyAttn plugs in
    here) and k/v go to ``cache.prefill``. Assumes the cache held nothing for these rows before.
  * chunked prefill (``chunk_offset=c``, static): the tokens are a prompt's slots ``c .. c+T-1`` and a
    ``FullCache`` holds its slots ``0 .. c-1`` (the earlier chunks, written the same way): k/v go to
    ``cache.prefill`` and the backend attends over the cache's first ``c + T`` slots (``T < S``: block-sparse
    backends run sparse, ``BlockSparseBackend``). ``jaxeff.models.cache.chunked_prefill`` drives it.
  * decode (``is_prefill=False``): k/v go to ``cache.append`` and the queries attend over the cache with
    ``cache.attend`` (also correct for chunked prefill continuing a non-empty cache).

  Args:
    params: the parameter table (module docstring).
    tokens_bt: int token ids [B, T].
    positions_bt: int positions [B, T]; -1 marks padding (never attended to, not counted in the cache).
    cache: ``None`` or a cache implementing ``jaxeff.kvcache.KVCache``.
    config: the model config (static).
    attention: the prefill attention backend, e.g. ``Dense()``.
    is_prefill: see above.
    logits_index: optional [B] token index per row; logits are then computed only there ([B, 1, V]), which
      skips the output head for the rest of a prompt (the sampler's prefill needs the last token only).
    input_offset: optional [B, T, D] added to the token embeddings (gradients with respect to input
      embeddings, e.g. GradS's demonstration scores, are gradients with respect to this offset at 0).
    chunk_offset: see chunked prefill above (``None``: not a continuation chunk).
    return_hidden: also return the residual stream after the last block, before the final norm ([B, T, D];
      the CoT selection rule's R_h reads it).

  Returns:
    ``(logits [B, T, V] float32, cache)``, or ``(logits, cache, hidden [B, T, D])`` with ``return_hidden``.

  Example:
    >>> cfg = ModelConfig.tiny(); params = init_params(cfg, jax.random.key(0))
    >>> tok = jnp.zeros((1, 5), jnp.int32); pos = jnp.arange(5)[None]
    >>> logits, _ = forward(params, tok, pos, config=cfg)
    >>> logits.shape
    (1, 5, 272)
  """
  B, T = tokens_bt.shape
  if positions_bt.shape != (B, T):
    raise ValueError(f"positions shape {positions_bt.shape} does not match tokens shape {(B, T)}")
  if chunk_offset is not None:  # duck-typed: the substrate does not import jaxeff.kvcache
    layers = getattr(cache, "layers", None) or ()
    if getattr(cache, "bounded", False):
      raise ValueError(
        "chunked prefill (chunk_offset) reads earlier chunks back by slot: use FullCache, not a window-bounded "
        "cache (Windowed)"
      )
    if not layers or not all(hasattr(e, "k") and hasattr(e, "v") and hasattr(e, "pos") for e in layers):
      raise ValueError(
        f"chunked prefill (chunk_offset) needs a cache that keeps full k/v (FullCache), got {type(cache).__name__}"
      )
    if not 0 <= chunk_offset <= cache.max_len - T:
      raise ValueError(f"chunk_offset {chunk_offset} + {T} tokens does not fit the cache's {cache.max_len} slots")
  if is_prefill is None:
    is_prefill = T > 1
  cap = check_softcap(config, attention, cache)
  inv_freqs = layer_inv_freqs(config)
  safe_pos = jnp.maximum(positions_bt, 0)
  x = embed_tokens(params, tokens_bt, config)
  if input_offset is not None:
    x = x + input_offset.astype(x.dtype)
  x = shard_lib.constrain(x, ("batch", "seq", "act_embed"))
  for i, lp in enumerate(params["layers"]):
    window = config.layer_window(i)
    h = rms_norm(x, lp["attn_norm"], config.rms_norm_eps)
    q, k, v, latent = project(lp["attn"], h, safe_pos, config, inv_freqs[i])
    extra = {} if latent is None else {"latent": latent}  # a latent layer's cache may keep c instead of k/v
    q = shard_lib.constrain(q, ("batch", "seq", "act_heads", None))
    if cache is None:
      out = attention(q, k, v, positions_bt, positions_bt, window=window, layer=i, **cap)
    elif chunk_offset is not None:
      cache = cache.prefill(i, k, v, positions_bt)
      e, n = cache.layers[i], chunk_offset + T
      kv = e.k[:, :n].astype(q.dtype), e.v[:, :n].astype(q.dtype)
      out = attention(q, *kv, positions_bt, e.pos[:, :n], window=window, layer=i, **cap)
    elif is_prefill:
      out = attention(q, k, v, positions_bt, positions_bt, window=window, layer=i, **cap)
      cache = cache.prefill(i, k, v, positions_bt, q=q, **extra)  # q: eviction presses score with it
    else:
      cache = cache.append(i, k, v, positions_bt, **extra)
      out = cache.attend(i, q, positions_bt, window=window, **extra, **cap)
    attn_out = linear(out, lp["attn"]["o"], n_in=2)
    if "o_bias" in lp["attn"]:
      attn_out = attn_out + lp["attn"]["o_bias"]
    x = x + post_norm(lp, "attn_post_norm", attn_out, config)
    h = rms_norm(x, lp["mlp_norm"], config.rms_norm_eps)
    x = x + post_norm(lp, "mlp_post_norm", feed_forward(lp, h, config), config)
    x = shard_lib.constrain(x, ("batch", "seq", "act_embed"))
  hidden = x
  if logits_index is not None:
    x = jnp.take_along_axis(x, logits_index[:, None, None].astype(jnp.int32), axis=1)
  x = rms_norm(x, params["final_norm"], config.rms_norm_eps)
  head = params["embed"] if config.tie_embeddings else params["lm_head"]
  logits = soft_cap(jnp.einsum("btd,vd->btv", x, head, preferred_element_type=jnp.float32), config)
  logits = shard_lib.constrain(logits, ("batch", "seq", "act_vocab"))
  return (logits, cache, hidden) if return_hidden else (logits, cache)
