"""CAMERA (arXiv 2508.02322): micro-expert energy and CAMERA-P structured pruning of MoE layers.

A micro-expert (e, i) is channel i of expert e across its three matrices: row i of ``gate`` and ``up`` and
column i of ``down`` (the basis vector w_i in R^D). On a token x the MoE output is exactly

  y(x) = sum_i phi_i(x) w_i,   phi_(e,i)(x) = A_e(x) silu(g_(e,i) . x) (u_(e,i) . x)

with A_e the routing weight (0 when e is not selected); the shared expert's channels are micro-experts too,
weighted by sigmoid(w_g . x) (Qwen2-MoE) or 1. The energy of micro-expert i over calibration tokens is

  E_i = [ (1 - alpha) ||Phi[:, i]||_2^2 + alpha ||Phi[:, i]||_inf^2 ] ||w_i||_2^2       (alpha = 0.9 default)

so alpha = 0 is exactly the squared Frobenius error of deleting i alone, alpha = 1 the worst-token squared
error. Accumulated in float32 over token chunks (running sum and max of phi^2): the [tokens, N] matrix is
never materialised beyond one chunk.

CAMERA-P ranks all micro-experts of a layer (routed and shared together) and zeroes the ``floor(N * ratio)``
lowest (``prune``); layers are scored in order on the inputs produced by the already-pruned earlier layers
(as the official code does). ``compact`` then physically shrinks every expert to its surviving channels
(permuted first, zero-padded to the layer's widest expert), so memory and MoE compute drop; masked and
compacted models give identical logits.

Baselines in the same API (``baseline_masks``): whole experts by routing frequency (NAEE-style expert
pruning at an equal channel count), per-expert uniform channel pruning by weight magnitude, random channels.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxeff.attention.dense import Dense
from jaxeff.config import ModelConfig, rope_inv_freq
from jaxeff.models.decoder import feed_forward, linear, qkv_projection, rms_norm
from jaxeff.models.moe import expert_hidden, route, routing_matrix


# ------------------------------------------------------------------------------------------------ micro-experts
def micro_coefficients(mlp: dict[str, Any], x_td, config: ModelConfig):
  """Phi [T, N] (routed channels e-major, then shared) and the basis vectors W [N, D] of one MoE layer."""
  w, idx = route(mlp["router"], x_td, config)
  A = routing_matrix(w, idx, config.n_experts)  # [T, E]
  E, D, I = mlp["down"].shape
  phi = (expert_hidden(mlp, x_td) * A[..., None]).reshape(x_td.shape[0], E * I)
  W = mlp["down"].transpose(0, 2, 1).reshape(E * I, D)
  if "shared" in mlp:
    sh = mlp["shared"]
    h = jax.nn.silu(x_td @ sh["gate"].T) * (x_td @ sh["up"].T)
    if "shared_gate" in mlp:
      h = h * jax.nn.sigmoid(x_td @ mlp["shared_gate"].T)
    phi = jnp.concatenate([phi, h], axis=1)
    W = jnp.concatenate([W, sh["down"].T], axis=0)
  return phi, W


@dataclasses.dataclass
class EnergyAccumulator:
  """Running sum and max of phi^2 per micro-expert (float32), fed chunk by chunk."""

  sum_sq: np.ndarray | None = None
  max_sq: np.ndarray | None = None
  tokens: int = 0

  def update(self, phi_tn) -> None:
    sq = jnp.square(phi_tn.astype(jnp.float32))
    s, m = np.asarray(sq.sum(0)), np.asarray(sq.max(0))
    self.sum_sq = s if self.sum_sq is None else self.sum_sq + s
    self.max_sq = m if self.max_sq is None else np.maximum(self.max_sq, m)
    self.tokens += int(phi_tn.shape[0])


def energy(acc: EnergyAccumulator, W_nd, alpha: float = 0.9) -> np.ndarray:
  """E_i = [(1 - alpha) sum_t phi_i^2 + alpha max_t phi_i^2] ||w_i||^2 (module docstring)."""
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(f"alpha must be in [0, 1], got {alpha}")
  wn = np.sum(np.square(np.asarray(W_nd, np.float32)), axis=1)
  return ((1 - alpha) * acc.sum_sq + alpha * acc.max_sq) * wn


# ------------------------------------------------------------------------------------------------ layer walk
def _attention_half(lp, x, pos, config: ModelConfig, layer: int):
  """x + Attn(RMSNorm(x)) for one layer (the decoder's block, exact attention)."""
  h = rms_norm(x, lp["attn_norm"], config.rms_norm_eps)
  q, k, v = qkv_projection(lp["attn"], h, pos, config, jnp.asarray(rope_inv_freq(config)))
  out = Dense()(q, k, v, pos, pos, window=config.layer_window(layer))
  a = linear(out, lp["attn"]["o"], n_in=2)
  if "o_bias" in lp["attn"]:
    a = a + lp["attn"]["o_bias"]
  return x + a


def layer_walk(params, config: ModelConfig, tokens_bt):
  """Generator over layers: yields (layer, mlp_input [B, T, D], advance) where ``advance(layer_params)`` must be
  called with the (possibly pruned) layer to move the hidden states on (it returns them, [B, T, D]).
  Reproduces ``forward`` exactly."""
  B, T = tokens_bt.shape
  pos = jnp.broadcast_to(jnp.arange(T), (B, T))
  x = jnp.take(params["embed"], jnp.asarray(tokens_bt), axis=0)
  attn = jax.jit(lambda lp, x, i: _attention_half(lp, x, pos, config, i), static_argnums=2)
  mlp = jax.jit(lambda lp, x, h: x + feed_forward(lp, h, config))
  for i in range(config.n_layers):
    x = attn(params["layers"][i], x, i)
    h = rms_norm(x, params["layers"][i]["mlp_norm"], config.rms_norm_eps)
    box = {}

    def advance(lp, x=x, h=h, box=box):
      box["x"] = mlp(lp, x, h)
      return box["x"]

    yield i, h, advance
    x = box["x"]


def mlp_inputs(params, config: ModelConfig, tokens_bt) -> dict[int, jax.Array]:
  """The MLP inputs [B*T, D] of every MoE layer of the unmodified model on ``tokens_bt`` (GPTQ calibration)."""
  out = {}
  for i, h, advance in layer_walk(params, config, tokens_bt):
    if config.is_moe(i):
      out[i] = h.reshape(-1, config.d_model)
    advance(params["layers"][i])
  return out


# ------------------------------------------------------------------------------------------------ CAMERA-P
@dataclasses.dataclass
class CameraReport:
  """Per-layer energies [N], kept masks (routed [E, I], shared [S] or None), routing counts [E] (method
  'frequency') and timing."""

  energies: dict[int, np.ndarray]
  masks: dict[int, tuple[np.ndarray, np.ndarray | None]]
  seconds: float
  tokens: int
  frequencies: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)


def _n_micro(config: ModelConfig, lp) -> tuple[int, int, int]:
  E, _, I = lp["mlp"]["down"].shape
  S = lp["mlp"]["shared"]["down"].shape[1] if "shared" in lp["mlp"] else 0
  return E, I, S


def apply_masks(lp, routed_keep, shared_keep):
  """Zero gate/up rows and down columns of pruned channels (silu(0) * 0 = 0: exactly no contribution)."""
  m = dict(lp["mlp"])
  rk = jnp.asarray(routed_keep, m["gate"].dtype)  # [E, I]
  m["gate"] = m["gate"] * rk[..., None]
  m["up"] = m["up"] * rk[..., None]
  m["down"] = m["down"] * rk[:, None, :]
  if shared_keep is not None:
    sk = jnp.asarray(shared_keep, m["gate"].dtype)
    sh = dict(m["shared"])
    sh["gate"], sh["up"], sh["down"] = sh["gate"] * sk[:, None], sh["up"] * sk[:, None], sh["down"] * sk[None]
    m["shared"] = sh
  return {**lp, "mlp": m}


def keep_lowest_pruned(scores: np.ndarray, n_prune: int) -> np.ndarray:
  """Boolean keep mask dropping the ``n_prune`` lowest scores (ties: the lower index is pruned first, a
  stable sort, like ``torch.topk(largest=False)`` on distinct values)."""
  keep = np.ones(scores.shape, bool)
  keep[np.argsort(scores, kind="stable")[:n_prune]] = False
  return keep


def camera_prune(
  params,
  config: ModelConfig,
  calibration: np.ndarray,
  ratio: float,
  *,
  alpha: float = 0.9,
  chunk: int = 8,
  method: str = "camera",
  seed: int = 0,
  progress: bool = False,
):
  """CAMERA-P (or a baseline with the same layer walk) -> (masked params, CameraReport).

  Args:
    params, config: a MoE model.
    calibration: token ids [n, T] (e.g. windows of the stdlib code corpus).
    ratio: fraction of each MoE layer's micro-experts (routed + shared) to remove, in [0, 1].
    alpha: the energy's max weight.
    chunk: calibration rows per step (the accumulators stream over chunks).
    method: 'camera', or a baseline: 'frequency' (whole experts by routing frequency, NAEE-style),
      'magnitude' (each expert loses ``ratio`` of its channels by ||g_i|| ||u_i|| ||w_i||), 'random'.

  Raises:
    ValueError: ratio outside [0, 1], an unknown method, or a dense model.
  """
  if not 0.0 <= ratio <= 1.0:
    raise ValueError(f"pruning ratio must be in [0, 1], got {ratio}")
  if method not in ("camera", "frequency", "magnitude", "random"):
    raise ValueError(f"unknown method {method!r}; choose camera, frequency, magnitude or random")
  if not config.n_experts:
    raise ValueError("CAMERA needs a mixture-of-experts model (config.n_experts > 0)")
  calibration = np.asarray(calibration, np.int32)
  if calibration.ndim != 2 or calibration.shape[1] > config.max_position_embeddings:
    raise ValueError(
      f"calibration must be token windows [n, T] with T <= the model's {config.max_position_embeddings} positions, "
      f"got shape {calibration.shape}"
    )
  t0 = time.perf_counter()
  new_layers = list(params["layers"])
  report = CameraReport({}, {}, 0.0, int(calibration.size))
  # layer by layer over all chunks: each layer is scored on inputs produced by the pruned earlier layers
  view = {**params, "layers": new_layers}  # the walks read layer i when they reach it: earlier ones are pruned
  walks = [layer_walk(view, config, calibration[a : a + chunk]) for a in range(0, len(calibration), chunk)]
  coef = jax.jit(lambda m, h: micro_coefficients(m, h.reshape(-1, h.shape[-1]), config))

  @jax.jit
  def freq_fn(m, h):
    idx = route(m["router"], h.reshape(-1, h.shape[-1]), config)[1]
    return jnp.sum(jax.nn.one_hot(idx, config.n_experts), (0, 1))

  rng = np.random.default_rng(seed)
  layer_iter = range(config.n_layers)
  if progress:
    from tqdm.auto import tqdm

    layer_iter = tqdm(layer_iter, desc=f"camera {method}", unit="layer")
  for i in layer_iter:
    steps = [next(w) for w in walks]
    lp = new_layers[i]
    if config.is_moe(i):
      E, I, S = _n_micro(config, lp)
      N = E * I + S
      n_prune = int(np.floor(N * ratio))
      acc, freq, W = EnergyAccumulator(), np.zeros(E), None
      for _, h, _ in steps:  # each method streams only the statistic it ranks by
        if method == "camera":
          phi, W = coef(lp["mlp"], h)
          acc.update(phi)
        elif method == "frequency":
          freq += np.asarray(freq_fn(lp["mlp"], h))
      if method == "frequency":
        report.frequencies[i] = freq.copy()
      if method == "camera":
        scores = energy(acc, W, alpha)
        report.energies[i] = scores
      elif method == "random":
        scores = rng.random(N)
      elif method == "magnitude":
        scores = _magnitude_scores(lp["mlp"], E, I, S)
      else:  # frequency: whole experts, least routed first (shared channels kept); see _per_method_keep
        scores = None
      keep = _per_method_keep(method, scores, n_prune, E, I, S, freq)
      routed_keep, shared_keep = keep[: E * I].reshape(E, I), (keep[E * I :] if S else None)
      report.masks[i] = (routed_keep, shared_keep)
      lp = apply_masks(lp, routed_keep, shared_keep)
      new_layers[i] = lp
    for _, _, advance in steps:
      advance(lp)
  report.seconds = time.perf_counter() - t0
  return {**params, "layers": tuple(new_layers)}, report


def _magnitude_scores(mlp, E, I, S):
  g = np.linalg.norm(np.asarray(mlp["gate"]), axis=2)  # [E, I]
  u = np.linalg.norm(np.asarray(mlp["up"]), axis=2)
  d = np.linalg.norm(np.asarray(mlp["down"]), axis=1)  # [E, I]
  s = (g * u * d).reshape(-1)
  if S:
    sh = mlp["shared"]
    ss = np.linalg.norm(np.asarray(sh["gate"]), axis=1) * np.linalg.norm(np.asarray(sh["up"]), axis=1)
    s = np.concatenate([s, ss * np.linalg.norm(np.asarray(sh["down"]), axis=0)])
  return s


def _per_method_keep(method, scores, n_prune, E, I, S, freq):
  if method in ("camera", "random"):
    return keep_lowest_pruned(scores, n_prune)
  if method == "magnitude":  # the same ratio inside every expert (and the shared expert)
    keep = np.ones(E * I + S, bool)
    ratio = n_prune / (E * I + S)
    for e in range(E):
      seg = scores[e * I : (e + 1) * I]
      keep[e * I : (e + 1) * I] = keep_lowest_pruned(seg, int(np.floor(I * ratio)))
    if S:
      keep[E * I :] = keep_lowest_pruned(scores[E * I :], int(np.floor(S * ratio)))
    return keep
  # frequency: drop whole experts (least routed first) until n_prune channels are gone; finish with a partial
  keep = np.ones(E * I + S, bool)
  left = n_prune
  for e in np.argsort(freq, kind="stable"):
    if left <= 0:
      break
    take = min(I, left)
    keep[e * I : e * I + take] = False
    left -= take
  return keep


# ------------------------------------------------------------------------------------------------ compaction
def compact(params, config: ModelConfig, report: CameraReport, multiple: int = 1, layout: str = "flat"):
  """Physically drop pruned channels; logits equal the masked model's.

  ``layout='flat'`` (default): the kept channels of all experts (and the shared expert) in one ragged list
  with an ``owner`` id per channel (``jaxeff.models.moe.moe_flat``): memory and MoE compute scale exactly with
  the kept count, however unevenly CAMERA's per-layer ranking spread the pruning over experts.
  ``layout='padded'``: stacked experts kept, each expert's kept channels moved first (the intermediate axis is
  permutation invariant) and cut to the layer's widest kept count rounded up to ``multiple`` (zero-padded):
  works with the routed path too, but saves only what the least-pruned expert allows.
  ``layout='experts'``: one entry per expert holding exactly its kept channels (widths differ), run by the routed
  loop ``jaxeff.models.moe.moe_experts``: memory scales with the kept count and a token's compute with its
  routed experts' kept channels. (Compact a ratio-0 report to put the unpruned model in the same layout.)
  """
  if layout not in ("flat", "padded", "experts"):
    raise ValueError(f"layout must be 'flat', 'padded' or 'experts', got {layout!r}")
  layers = list(params["layers"])
  for i, (rk, sk) in report.masks.items():
    if layout == "flat":
      layers[i] = {**layers[i], "mlp": _flat_layer(layers[i]["mlp"], rk, sk)}
      continue
    if layout == "experts":
      layers[i] = {**layers[i], "mlp": _experts_layer(layers[i]["mlp"], rk, sk)}
      continue
    m = dict(layers[i]["mlp"])
    E, I = rk.shape
    width = max(1, int(rk.sum(1).max()))
    width = min(I, -(-width // multiple) * multiple)
    order = np.argsort(~rk, axis=1, kind="stable")[:, :width]  # kept channels first, in index order
    valid = np.take_along_axis(rk, order, axis=1)
    oi = jnp.asarray(order)
    vm = jnp.asarray(valid, m["gate"].dtype)
    m["gate"] = jnp.take_along_axis(m["gate"], oi[..., None], axis=1) * vm[..., None]
    m["up"] = jnp.take_along_axis(m["up"], oi[..., None], axis=1) * vm[..., None]
    m["down"] = jnp.take_along_axis(m["down"], oi[:, None, :], axis=2) * vm[:, None, :]
    if sk is not None:
      m["shared"] = _kept_shared(m["shared"], sk)
    layers[i] = {**layers[i], "mlp": m}
  return {**params, "layers": tuple(layers)}


def _experts_layer(m, rk, sk):
  """One compacted layer in the per-expert layout (each expert's kept channels in index order)."""
  experts = []
  for e in range(rk.shape[0]):
    keep = jnp.asarray(np.flatnonzero(rk[e]))
    experts.append({"gate": m["gate"][e][keep], "up": m["up"][e][keep], "down": m["down"][e][:, keep]})
  out = {k: v for k, v in m.items() if k not in ("gate", "up", "down")}
  out["experts"] = tuple(experts)
  if "shared" in m and sk is not None:
    out["shared"] = _kept_shared(m["shared"], sk)
  return out


def _kept_shared(shared, sk):
  """The shared expert cut to its kept channels ``sk`` (gate / up rows, down columns)."""
  idx = jnp.asarray(np.flatnonzero(sk))
  return {**shared, "gate": shared["gate"][idx], "up": shared["up"][idx], "down": shared["down"][:, idx]}


def _flat_layer(m, rk, sk):
  """One compacted layer in the flat layout (kept routed channels e-major, then kept shared channels)."""
  E, I = rk.shape
  e_idx, i_idx = np.nonzero(rk)
  gate = m["gate"][e_idx, i_idx]  # [C, D]
  up = m["up"][e_idx, i_idx]
  down = m["down"][e_idx, :, i_idx].T  # [D, C]
  owner = e_idx
  if "shared" in m:
    keep = np.flatnonzero(sk) if sk is not None else np.arange(m["shared"]["gate"].shape[0])
    gate = jnp.concatenate([gate, m["shared"]["gate"][keep]], 0)
    up = jnp.concatenate([up, m["shared"]["up"][keep]], 0)
    down = jnp.concatenate([down, m["shared"]["down"][:, keep]], 1)
    owner = np.concatenate([owner, np.full(len(keep), E)])
  out = {"router": m["router"], "gate": gate, "up": up, "down": down, "owner": jnp.asarray(owner, jnp.int32)}
  if "shared_gate" in m:
    out["shared_gate"] = m["shared_gate"]
  return out


def moe_param_bytes(params) -> int:
  """Bytes of every MoE leaf (routers, experts, shared experts)."""
  total = 0
  for lp in params["layers"]:
    if "router" in lp["mlp"]:
      total += sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(lp["mlp"]))
  return total


def calibration_windows(tokens: Iterable[int] | np.ndarray, n: int, length: int, seed: int = 1234) -> np.ndarray:
  """``n`` windows of ``length`` tokens at random offsets of a token stream (the official recipe: 128 x 2048,
  seed 1234, WikiText-2; jaxeff uses the machine's stdlib code or Debian text)."""
  stream = np.asarray(tokens, np.int32)
  if len(stream) <= length:
    raise ValueError(f"calibration stream of {len(stream)} tokens is shorter than one window of {length}")
  starts = np.random.default_rng(seed).integers(0, len(stream) - length, n)
  return np.stack([stream[s : s + length] for s in starts])


def bit_scores(params, config: ModelConfig, calibration, method: str = "energy", *, seed: int = 0, **kw):
  """Per-layer micro-expert scores [N] (routed e-major, then shared) that ``quantize_model`` ranks into bit
  groups (highest score -> most bits): CAMERA-Q's ``"energy"`` and equal-bits, energy-agnostic baselines:

  * ``"magnitude"``: ||g_i|| ||u_i|| ||w_i|| (the weights alone);
  * ``"frequency"``: the routing count of the channel's expert on the calibration tokens (every channel of a
    frequently routed expert first; the shared expert, always active, counts as the most frequent);
  * ``"random"``: a seeded permutation.

  ``calibration``: token windows [n, T] as in ``camera_prune`` (unused by magnitude / random). Example:
  ``scores = bit_scores(params, cfg, calib, "frequency"); quantize_model(params, cfg, scores, QuantConfig(), x)``.
  """
  if method not in ("energy", "magnitude", "frequency", "random"):
    raise ValueError(f"unknown scoring {method!r}; choose energy, magnitude, frequency or random")
  moe = [i for i in range(config.n_layers) if config.is_moe(i)]
  if method == "energy":
    return camera_prune(params, config, calibration, 0.0, method="camera", **kw)[1].energies
  out = {}
  rng = np.random.default_rng(seed)
  if method == "frequency":
    rep_ = camera_prune(params, config, calibration, 0.0, method="frequency", **kw)[1]
  for i in moe:
    E, I, S = _n_micro(config, params["layers"][i])
    if method == "magnitude":
      out[i] = _magnitude_scores(params["layers"][i]["mlp"], E, I, S)
    elif method == "random":
      out[i] = rng.random(E * I + S)
    else:
      f = rep_.frequencies[i].astype(np.float64)
      out[i] = np.concatenate([np.repeat(f, I), np.full(S, f.max() + 1.0)])
  return out
