"""Mixture-of-experts MLP block (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE) behind the decoder's ``feed_forward``.

For a token x (after the MLP RMSNorm):

  p = softmax(x R^T)  (float32),   (w, idx) = top-k(p),   w <- w / sum(w) if ``norm_topk``
  y = sum_{j<k} w_j FFN_{idx_j}(x) + [sigmoid(g . x)] FFN_shared(x),   FFN(x) = down(silu(gate x) * (up x))

Two paths that agree to float32 tolerance: ``dense`` evaluates every expert on every token and weights by the
routing matrix A [T, E] (A[t, e] = w_j if e = idx_j else 0; what CAMERA's micro-expert analysis needs), and
``routed`` sorts the (token, expert) assignments by expert and runs ``jax.lax.ragged_dot`` grouped matmuls
(compute proportional to k, not E). ``routed`` is the default above ``DENSE_MAX_EXPERTS`` experts. Layers
rewritten by CAMERA run ``moe_flat`` (compacted: one ragged list of kept channels, every kept channel on every
token), ``moe_experts`` (compacted per expert: tokens routed, each paying for its experts' kept channels only) or
``moe_packed`` (CAMERA-Q bit-plane packed codes).

Example:
  >>> cfg = ModelConfig.tiny(model_type="mixtral", n_experts=4, experts_per_token=2, d_expert=32, norm_topk=True)
  >>> from jaxeff.models import init_params
  >>> mlp = init_params(cfg, jax.random.key(0))["layers"][0]["mlp"]
  >>> moe_mlp(mlp, jnp.ones((1, 3, cfg.d_model)), cfg).shape
  (1, 3, 64)

Reference: Mixtral of Experts (arXiv 2401.04088); Qwen2-MoE / Qwen3-MoE model cards; transformers'
``*SparseMoeBlock`` classes (parity tests: tests/models/test_parity.py, tests/models/test_moe.py).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from jaxeff.config import ModelConfig

DENSE_MAX_EXPERTS = 8  # up to this many experts the dense path is cheaper on CPU than sorting + grouped matmuls


def route(router_ed: Array, x_td: Array, config: ModelConfig) -> tuple[Array, Array]:
  """Top-k routing: (weights [T, k] in x's dtype, expert indices [T, k]); softmax over all experts in f32."""
  logits = jnp.einsum("td,ed->te", x_td, router_ed, preferred_element_type=jnp.float32)
  probs = jax.nn.softmax(logits, axis=-1)
  w, idx = jax.lax.top_k(probs, config.experts_per_token)
  if config.norm_topk:
    w = w / jnp.sum(w, axis=-1, keepdims=True)
  return w.astype(x_td.dtype), idx


def routing_matrix(w_tk: Array, idx_tk: Array, n_experts: int) -> Array:
  """A [T, E]: the routing weight of each expert for each token (0 when not selected)."""
  return jnp.sum(jax.nn.one_hot(idx_tk, n_experts, dtype=w_tk.dtype) * w_tk[..., None], axis=1)


def expert_hidden(mlp: dict[str, Array], x_td: Array) -> Array:
  """silu(gate_e x) * (up_e x) for every expert: [T, E, I]."""
  g = jnp.einsum("td,eid->tei", x_td, mlp["gate"])
  u = jnp.einsum("td,eid->tei", x_td, mlp["up"])
  return jax.nn.silu(g) * u


def shared_output(mlp: dict[str, Array], x_td: Array) -> Array:
  """The shared expert's contribution (gated by sigmoid(g . x) when present), or 0."""
  if "shared" not in mlp:
    return jnp.zeros_like(x_td)
  sh = mlp["shared"]
  h = jax.nn.silu(x_td @ sh["gate"].T) * (x_td @ sh["up"].T)
  y = h @ sh["down"].T
  if "shared_gate" in mlp:
    y = y * jax.nn.sigmoid(x_td @ mlp["shared_gate"].T)
  return y


def moe_dense(mlp: dict[str, Array], x_td: Array, config: ModelConfig) -> Array:
  """Every expert on every token, weighted by the routing matrix (exact; E/k times the routed compute)."""
  w, idx = route(mlp["router"], x_td, config)
  A = routing_matrix(w, idx, config.n_experts)  # [T, E]
  h = expert_hidden(mlp, x_td) * A[..., None]  # [T, E, I]
  return jnp.einsum("tei,edi->td", h, mlp["down"]) + shared_output(mlp, x_td)


def moe_routed(mlp: dict[str, Array], x_td: Array, config: ModelConfig) -> Array:
  """Token dispatch: the T*k (token, expert) pairs sorted by expert, grouped matmuls, weighted scatter-add."""
  T, D = x_td.shape
  E, k = config.n_experts, config.experts_per_token
  w, idx = route(mlp["router"], x_td, config)
  flat_e = idx.reshape(-1)  # [T*k]
  order = jnp.argsort(flat_e, stable=True)
  tok = order // k
  xs = x_td[tok]  # [T*k, D] sorted by expert
  sizes = jnp.bincount(flat_e, length=E).astype(jnp.int32)
  g = jax.lax.ragged_dot(xs, mlp["gate"].transpose(0, 2, 1), sizes)
  u = jax.lax.ragged_dot(xs, mlp["up"].transpose(0, 2, 1), sizes)
  y = jax.lax.ragged_dot(jax.nn.silu(g) * u, mlp["down"].transpose(0, 2, 1), sizes)  # [T*k, D]
  y = y * w.reshape(-1)[order][:, None]
  out = jnp.zeros((T, D), y.dtype).at[tok].add(y)
  return out.astype(x_td.dtype) + shared_output(mlp, x_td)


def _extended_routing(mlp, x_td, config):
  w, idx = route(mlp["router"], x_td, config)
  A = routing_matrix(w, idx, config.n_experts)  # [T, E]
  if "shared_gate" in mlp:
    sg = jax.nn.sigmoid(x_td @ mlp["shared_gate"].T)
  else:
    sg = jnp.ones((x_td.shape[0], 1), x_td.dtype)
  return jnp.concatenate([A, sg.astype(A.dtype)], axis=1)  # [T, E + 1]


def moe_flat(mlp: dict[str, Array], x_td: Array, config: ModelConfig) -> Array:
  """A compacted (ragged) layer: every kept channel of every expert in one flat list, ``gate``/``up`` [C, D],
  ``down`` [D, C], ``owner`` [C] (expert id; E = the shared expert):

    y = sum_c A[t, owner_c] silu(g_c . x) (u_c . x) d_c

  with A extended by the shared gate (sigmoid(w_g . x), or 1) in column E. Compute and memory scale with the
  kept channels (``jaxeff.moe.camera.compact(layout='flat')``)."""
  A = _extended_routing(mlp, x_td, config)  # [T, E + 1]
  h = jax.nn.silu(x_td @ mlp["gate"].T) * (x_td @ mlp["up"].T) * A[:, mlp["owner"]]
  return h @ mlp["down"].T


def moe_experts(mlp: dict[str, Any], x_td: Array, config: ModelConfig, block: int = 64) -> Array:
  """A compacted layer with one entry per expert (``compact(layout='experts')``): ``experts`` is a tuple of
  ``{gate [w_e, D], up [w_e, D], down [D, w_e]}`` whose kept widths ``w_e`` differ, plus the (pruned) shared
  expert. Tokens are routed: the (token, expert) pairs are sorted by expert and each expert runs a loop over its
  own pairs, ``block`` at a time (the trip count is the traced ``ceil(n_e / block)``: an expert no token chose
  reads none of its weights),

    y_t = sum_{j<k} w_{t,j} down_e (silu(gate_e x_t) * up_e x_t)|_{e = idx_{t,j}}  [+ shared],

  so a token pays for its routed experts' kept channels only: ``2 k w_e D + ...`` MACs instead of the flat
  layout's every kept channel of every expert. The grouped matmul over ragged widths that ``ragged_dot`` cannot
  express (its groups share one width); on XLA:CPU ``ragged_dot`` itself runs far slower than this loop.

  Shapes: x_td [T, D] -> [T, D]. Example: ``moe_mlp(compact(p, cfg, rep, layout='experts')['layers'][0]['mlp'],
  x, cfg)``. Reference: CAMERA (arXiv 2508.02322) Sec. 4 (micro-expert pruning); MegaBlocks (Gale et al. 2023)
  for dropless grouped expert compute."""
  T, D = x_td.shape
  E, k = config.n_experts, config.experts_per_token
  w, idx = route(mlp["router"], x_td, config)
  flat_e = idx.reshape(-1)
  order = jnp.argsort(flat_e, stable=True)
  b = max(1, min(block, T * k))
  tok = jnp.concatenate([order // k, jnp.full((b,), T)]).astype(jnp.int32)  # padded so every slice is in range
  wt = jnp.concatenate([w.reshape(-1)[order], jnp.zeros((b,), w.dtype)])
  sizes = jnp.bincount(flat_e, length=E).astype(jnp.int32)
  starts = jnp.cumsum(sizes) - sizes
  xz = jnp.concatenate([x_td, jnp.zeros((1, D), x_td.dtype)])  # row T: the padding token
  y = jnp.zeros((T + 1, D), jnp.float32)
  for e, ex in enumerate(mlp["experts"]):
    if ex["gate"].shape[0] == 0:  # every channel pruned: contributes exactly 0
      continue

    def body(i, y, e=e, ex=ex):
      at = starts[e] + i * b
      t = jax.lax.dynamic_slice_in_dim(tok, at, b)
      valid = i * b + jnp.arange(b) < sizes[e]
      t = jnp.where(valid, t, T)
      ww = jnp.where(valid, jax.lax.dynamic_slice_in_dim(wt, at, b), 0)
      xb = xz[t]
      h = jax.nn.silu(xb @ ex["gate"].T) * (xb @ ex["up"].T) * ww[:, None]
      return y.at[t].add((h @ ex["down"].T).astype(jnp.float32))

    y = jax.lax.fori_loop(0, (sizes[e] + b - 1) // b, body, y)
  return y[:T].astype(x_td.dtype) + shared_output(mlp, x_td)


def moe_packed(mlp: dict[str, Array], x_td: Array, config: ModelConfig, dequant: str | None = None) -> Array:
  """A CAMERA-Q layer stored packed (``jaxeff.moe.quant.pack_layer``): per bit-width group, gate/up through the
  dequantizing matmul over bit-planes (``kernels_pallas.dequant_matmul``: ``dequant`` names the implementation,
  default by backend: the Pallas kernel on TPU, the XLA path elsewhere) and the down rows dequantized, weighted
  like ``moe_flat``."""
  from kernels_pallas.dequant_matmul import dequant_matmul, dequantize

  A = _extended_routing(mlp, x_td, config)
  D = x_td.shape[-1]
  y = jnp.zeros(x_td.shape, jnp.float32)
  for g in mlp["packed"]:
    bits = g["gate"].shape[0]
    group = D // g["gate_scale"].shape[1]
    f32 = lambda n, g=g: (g[n + "_scale"].astype(jnp.float32), g[n + "_zero"].astype(jnp.float32))  # stored f16
    gate, up = (
      dequant_matmul(x_td, g[n], *f32(n), bits=bits, group=group, implementation=dequant) for n in ("gate", "up")
    )
    h = jax.nn.silu(gate) * up * A[:, g["owner"]]
    y = y + h @ dequantize(g["down"], *f32("down"), bits=bits, group=group)  # [C_b, D] rows
  return y.astype(x_td.dtype)


def moe_mlp(
  mlp: dict[str, Array],
  x_btd: Float[Array, "B T D"],
  config: ModelConfig,
  impl: str | None = None,
  dequant: str | None = None,
):
  """The MoE feed-forward on [B, T, D] (module docstring); ``impl`` 'dense' | 'routed' | None (by size).
  Compacted layers (an ``owner`` leaf) always take the flat path, per-expert layers (an ``experts`` tuple) the
  routed loop of ``moe_experts``; packed layers the dequantizing matmul
  (``dequant``: its implementation, see ``moe_packed``)."""
  B, T, D = x_btd.shape
  x = x_btd.reshape(B * T, D)
  if "owner" in mlp:
    return moe_flat(mlp, x, config).reshape(B, T, D)
  if "experts" in mlp:
    return moe_experts(mlp, x, config).reshape(B, T, D)
  if "packed" in mlp:
    return moe_packed(mlp, x, config, dequant).reshape(B, T, D)
  impl = impl or ("dense" if config.n_experts <= DENSE_MAX_EXPERTS else "routed")
  if impl == "dense":
    y = moe_dense(mlp, x, config)
  elif impl == "routed":
    y = moe_routed(mlp, x, config)
  else:
    raise ValueError(f"impl must be 'dense' or 'routed', got {impl!r}")
  return y.reshape(B, T, D)
