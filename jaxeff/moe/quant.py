"""CAMERA-Q: micro-expert mixed-precision quantization of MoE experts (RTN and GPTQ), packed storage.

Micro-experts are ranked by CAMERA's energy (``jaxeff.moe.camera``) and split into groups with bit-widths
(default 3 / 2 / 1 bits for 40 / 45 / 15 % of the channels: 2.25 bits on average; the paper's split is
UNVERIFIED, so ``bits`` and ``ratios`` are options). All three vectors of a micro-expert (gate row, up row,
down column: each of length D) share its precision. Quantization is asymmetric min-max per group of
``group_size`` values along D:

  scale = (max - min) / (2^b - 1),  zero = round(-min / scale),  q = clip(round(w / scale) + zero, 0, 2^b - 1),
  w_hat = (q - zero) * scale.

``rtn`` rounds to nearest; ``gptq`` (Frantar et al. 2023) sweeps the input columns of each matrix with the
inverse-Hessian error feedback, H = X^T X of the matrix's calibration inputs (gate/up: the tokens routed to
the expert; down: that expert's hidden activations), per-row grids for gate/up and per-column grids (the
micro-expert's own bits) for down.

Storage (``pack_codes``): b-bit codes as b bit-planes packed 8 per byte (exactly b bits per value) plus
float16 scale and zero per group; ``dequantize`` unpacks with shifts in jnp (the XLA path).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxeff.config import ModelConfig


# ------------------------------------------------------------------------------------------------ grids
def _grid(w: np.ndarray, bits: int):
  """Asymmetric min-max grid over the last axis: (scale, zero) with w's leading shape. The scale is rounded to
  float16 (the stored precision, ``pack_layer``) so the fake-quantized and the packed model are the same model;
  the zero is an integer in [0, 2^b - 1] (exact in float16)."""
  lo, hi = np.minimum(w.min(-1), 0.0), np.maximum(w.max(-1), 0.0)
  qmax = 2**bits - 1
  scale = (hi - lo) / qmax
  scale = np.where(scale > 0, scale, 1.0)
  scale = np.clip(scale, 2.0**-14, 65504.0).astype(np.float16).astype(np.float64)
  zero = np.round(-lo / scale)
  return scale, zero


def _quant(w: np.ndarray, scale, zero, bits: int):
  q = np.clip(np.round(w / scale[..., None]) + zero[..., None], 0, 2**bits - 1)
  return q, (q - zero[..., None]) * scale[..., None]


def rtn(w: np.ndarray, bits: np.ndarray | int, group_size: int, return_grids: bool = False):
  """Round-to-nearest of ``w [R, C]`` with per-row ``bits`` (int or [R]) and groups of ``group_size`` along C.
  Returns (codes [R, C], dequantized [R, C]) (+ scale, zero [R, C / group_size] with ``return_grids``); rows at
  16 bits or more are returned unchanged (codes 0)."""
  w = np.asarray(w, np.float64)
  R, C = w.shape
  bits = np.broadcast_to(np.asarray(bits), (R,))
  if C % group_size:
    raise ValueError(f"group_size {group_size} does not divide {C}")
  codes, out = np.zeros((R, C), np.int32), w.copy()
  scale, zero = np.ones((R, C // group_size)), np.zeros((R, C // group_size))
  for b in np.unique(bits):
    rows = np.flatnonzero(bits == b)
    if b >= 16:
      continue
    g = w[rows].reshape(len(rows), C // group_size, group_size)
    sc, z = _grid(g, int(b))
    q, d = _quant(g, sc, z, int(b))
    codes[rows], out[rows] = q.reshape(len(rows), C), d.reshape(len(rows), C)
    scale[rows], zero[rows] = sc, z
  return (codes, out, scale, zero) if return_grids else (codes, out)


def gptq(
  w: np.ndarray,
  H: np.ndarray,
  bits_rows=None,
  bits_cols=None,
  group_size: int = 32,
  damp: float = 0.01,
  return_grids: bool = False,
):
  """GPTQ of ``w [R, C]`` (output-major; columns = inputs) under Hessian ``H [C, C]``.

  ``bits_rows`` [R]: per-row grids (one precision per output row, groups of ``group_size`` along C, computed
  when the sweep enters the group); ``bits_cols`` [C]: per-column grids over the R values of each column (the
  column's own precision). Exactly one of them. Returns the dequantized weight [R, C]; with ``return_grids`` also
  (scale, zero): [R, C / group_size] for row grids, [C, R / group_size] for column grids (the grids of the
  transposed matrix's rows), so codes = round(Q / scale + zero) in the matching orientation.
  """
  W = np.asarray(w, np.float64).copy()
  R, C = W.shape
  H = np.asarray(H, np.float64).copy()
  dead = np.diag(H) == 0
  H[dead, dead] = 1.0
  W[:, dead] = 0.0
  H += damp * np.mean(np.diag(H)) * np.eye(C)
  Hinv = np.linalg.cholesky(np.linalg.inv(H)).T  # upper Cholesky factor of H^-1
  Q = np.zeros_like(W)
  scale = zero = None
  if bits_rows is not None:
    grid_s, grid_z = np.ones((R, -(-C // group_size))), np.zeros((R, -(-C // group_size)))
  else:
    ng = R // group_size if R % group_size == 0 else 1
    grid_s, grid_z = np.ones((C, ng)), np.zeros((C, ng))
  for j in range(C):
    if bits_rows is not None:
      if j % group_size == 0:
        blk = W[:, j : j + group_size]
        scale, zero = np.ones(R), np.zeros(R)
        for b in np.unique(bits_rows):
          r = np.flatnonzero(bits_rows == b)
          if b < 16:
            scale[r], zero[r] = _grid(blk[r], int(b))
        grid_s[:, j // group_size], grid_z[:, j // group_size] = scale, zero
      q = W[:, j].copy()
      for b in np.unique(bits_rows):
        r = np.flatnonzero(bits_rows == b)
        if b < 16:
          q[r] = _quant(W[r, j : j + 1], scale[r], zero[r], int(b))[1][:, 0]
    else:
      b = int(bits_cols[j])
      q = W[:, j].copy()
      if b < 16:
        g = W[:, j].reshape(-1, group_size) if R % group_size == 0 else W[:, j][None]
        s, z = _grid(g, b)
        q = _quant(g, s, z, b)[1].reshape(-1)
        grid_s[j], grid_z[j] = s, z
    Q[:, j] = q
    err = (W[:, j] - q) / Hinv[j, j]
    W[:, j + 1 :] -= np.outer(err, Hinv[j, j + 1 :])
  return (Q, grid_s, grid_z) if return_grids else Q


# ------------------------------------------------------------------------------------------------ CAMERA-Q
@dataclasses.dataclass(frozen=True)
class QuantConfig:
  """Mixed precision by energy: ``ratios`` of the micro-experts (highest energy first) get ``bits``."""

  bits: tuple[int, ...] = (3, 2, 1)
  ratios: tuple[float, ...] = (0.40, 0.45, 0.15)
  group_size: int = 32
  method: str = "gptq"
  damp: float = 0.01

  def __post_init__(self):
    if len(self.bits) != len(self.ratios) or not self.bits:
      raise ValueError(f"bits {self.bits} and ratios {self.ratios} must pair up")
    if any(b < 1 or b > 16 for b in self.bits):
      raise ValueError(f"bit-widths must be in [1, 16], got {self.bits}")
    if any(r < 0 for r in self.ratios) or abs(sum(self.ratios) - 1.0) > 1e-6:
      raise ValueError(f"ratios must be >= 0 and sum to 1, got {self.ratios}")
    if self.method not in ("rtn", "gptq"):
      raise ValueError(f"method must be 'rtn' or 'gptq', got {self.method!r}")

  @property
  def mean_bits(self) -> float:
    return float(sum(b * r for b, r in zip(self.bits, self.ratios)))


def assign_bits(scores: np.ndarray, qc: QuantConfig) -> np.ndarray:
  """Bits per micro-expert: the highest-energy ``ratios[0]`` get ``bits[0]``, and so on (ties: lower index
  first). Group sizes are rounded so they sum to N."""
  N = len(scores)
  order = np.argsort(-np.asarray(scores), kind="stable")
  counts = np.floor(np.asarray(qc.ratios) * N).astype(int)
  counts[-1] = N - counts[:-1].sum()
  out = np.empty(N, int)
  start = 0
  for b, c in zip(qc.bits, counts):
    out[order[start : start + c]] = b
    start += c
  return out


def _codes(q_rows, scale, zero, bits_rows, group_size):
  """Codes of dequantized rows [R, C] on their grids [R, C / group]: round(Q / s + z)."""
  R, C = q_rows.shape
  s = np.repeat(scale, group_size, axis=1)[:, :C]
  z = np.repeat(zero, group_size, axis=1)[:, :C]
  hi = (2 ** np.minimum(np.asarray(bits_rows), 15) - 1)[:, None]
  return np.clip(np.round(q_rows / s + z), 0, hi).astype(np.int32)


def quantize_channels(mlp: dict[str, Any], bits_n: np.ndarray, qc: QuantConfig, x_td=None, config: ModelConfig = None):
  """Quantize every micro-expert of one MoE layer (routed e-major, then shared) at its own bits.

  Returns a dict over the N channels, each a row of length D: ``{gate, up, down}`` -> (dequantized [N, D],
  codes [N, D], scale [N, D / group], zero [N, D / group]) (down as the channel's column of ``down``), plus
  ``owner`` [N] (expert id; E for the shared expert) and ``bits`` [N]. GPTQ needs the layer's calibration
  inputs ``x_td`` and ``config`` (the shared expert is always RTN).
  """
  from jaxeff.models.moe import expert_hidden, route

  m = jax.tree.map(lambda a: np.asarray(a, np.float64), dict(mlp))
  E, D, I = m["down"].shape
  gs = qc.group_size
  out = {k: ([], [], [], []) for k in ("gate", "up", "down")}
  if qc.method == "gptq":
    if x_td is None:
      raise ValueError("GPTQ needs calibration inputs x_td")
    x = np.asarray(x_td, np.float64)
    idx = np.asarray(route(jnp.asarray(mlp["router"]), jnp.asarray(x_td), config)[1])
    h_all = np.asarray(expert_hidden(mlp, jnp.asarray(x_td)), np.float64)  # [T, E, I]

  def add(name, q_rows, scale, zero, b):
    out[name][0].append(q_rows)
    out[name][1].append(_codes(q_rows, scale, zero, b, gs))
    out[name][2].append(scale)
    out[name][3].append(zero)

  for e in range(E):
    b = bits_n[e * I : (e + 1) * I]
    if qc.method == "rtn":
      for name, rows in (("gate", m["gate"][e]), ("up", m["up"][e]), ("down", m["down"][e].T)):
        _, d, sc, z = rtn(rows, b, gs, return_grids=True)
        add(name, d, sc, z, b)
    else:
      sel = np.any(idx == e, axis=1)
      xe = x[sel] if sel.any() else x[:1] * 0
      he = h_all[sel, e] if sel.any() else h_all[:1, e] * 0
      for name in ("gate", "up"):
        qd, sc, z = gptq(m[name][e], xe.T @ xe, bits_rows=b, group_size=gs, damp=qc.damp, return_grids=True)
        add(name, qd, sc, z, b)
      qd, sc, z = gptq(m["down"][e], he.T @ he, bits_cols=b, group_size=gs, damp=qc.damp, return_grids=True)
      add("down", qd.T, sc, z, b)
  owner = [np.repeat(np.arange(E), I)]
  if "shared" in m:
    sh = m["shared"]
    b = bits_n[E * I :]
    for name, rows in (("gate", sh["gate"]), ("up", sh["up"]), ("down", sh["down"].T)):
      _, d, sc, z = rtn(rows, b, gs, return_grids=True)
      add(name, d, sc, z, b)
    owner.append(np.full(len(b), E))
  res = {k: tuple(np.concatenate(v) for v in vals) for k, vals in out.items()}
  res["owner"] = np.concatenate(owner)
  res["bits"] = np.asarray(bits_n)
  return res


def quantize_layer(mlp: dict[str, Any], bits_n: np.ndarray, qc: QuantConfig, x_td=None, config: ModelConfig = None):
  """Fake-quantize (quantize + dequantize) one MoE layer's routed and shared experts with per-micro-expert bits
  [N] (routed e-major, then shared), keeping the stacked layout (exact quality, no memory saved; ``pack_layer``
  stores the packed codes)."""
  ch = quantize_channels(mlp, bits_n, qc, x_td, config)
  E, D, I = mlp["down"].shape
  dt = mlp["gate"].dtype
  out = dict(mlp)
  out["gate"] = jnp.asarray(ch["gate"][0][: E * I].reshape(E, I, D), dt)
  out["up"] = jnp.asarray(ch["up"][0][: E * I].reshape(E, I, D), dt)
  out["down"] = jnp.asarray(ch["down"][0][: E * I].reshape(E, I, D).transpose(0, 2, 1), dt)
  if "shared" in mlp:
    out["shared"] = {
      "gate": jnp.asarray(ch["gate"][0][E * I :], dt),
      "up": jnp.asarray(ch["up"][0][E * I :], dt),
      "down": jnp.asarray(ch["down"][0][E * I :].T, dt),
    }
  return out


def pack_layer(mlp: dict[str, Any], bits_n: np.ndarray, qc: QuantConfig, x_td=None, config: ModelConfig = None):
  """CAMERA-Q with real storage: the layer becomes ``{router, [shared_gate], packed: (group, ...)}``, one flat
  group per bit-width holding that group's channels (any expert, or the shared one) as bit-plane packed gate /
  up / down rows with a float16 scale and zero per ``group_size`` values and an ``owner`` id per channel
  (``jaxeff.models.moe.moe_packed`` runs it). Stored bits per weight: ``b + 32 / group_size`` plus the owner
  ids (``packed_bits_per_weight``): 2.25-bit codes are 3.25 bits at group 32 and 2.5 at group 128. Outputs equal
  ``quantize_layer``'s up to the float16 rounding of the scales (relative 2^-11)."""
  if any(b >= 16 for b in qc.bits) or mlp["gate"].shape[-1] % 8:
    raise ValueError("packing needs bit-widths below 16 and d_model a multiple of 8")
  ch = quantize_channels(mlp, bits_n, qc, x_td, config)
  groups = []
  for b in sorted(set(int(v) for v in bits_n), reverse=True):
    rows = np.flatnonzero(ch["bits"] == b)
    g = {"owner": jnp.asarray(ch["owner"][rows], jnp.int32)}
    for name in ("gate", "up", "down"):
      _, codes, sc, z = ch[name]
      g[name] = jnp.asarray(pack_codes(codes[rows], b))
      g[name + "_scale"] = jnp.asarray(sc[rows], jnp.float16)
      g[name + "_zero"] = jnp.asarray(z[rows], jnp.float16)
    groups.append(g)
  out = {"router": mlp["router"], "packed": tuple(groups)}
  if "shared_gate" in mlp:
    out["shared_gate"] = mlp["shared_gate"]
  return out


def packed_bits_per_weight(params: dict[str, Any]) -> float:
  """Stored bits per quantized weight over every packed MoE layer (``pack_layer``): bit-planes, float16 scales
  and zeros, and the int32 owner id of each channel, divided by the weights they encode (3 D per channel).

  Example:
    >>> import jax
    >>> from jaxeff.models import init_params
    >>> cfg = ModelConfig.tiny(model_type="mixtral", n_experts=4, experts_per_token=2, d_expert=16, d_ff=16)
    >>> qc = QuantConfig(bits=(2,), ratios=(1.0,), group_size=32, method="rtn")
    >>> q = quantize_model(init_params(cfg, jax.random.key(0)), cfg, {0: np.arange(64.0)}, qc, packed=True)
    >>> round(packed_bits_per_weight(q), 3)  # 2 + (16 + 16) / 32, plus 32 owner bits per 3 x 64 weights
    3.167
  """
  bits = weights = 0
  for lp in params["layers"]:
    for g in lp["mlp"].get("packed", ()) if isinstance(lp.get("mlp"), dict) else ():
      bits += 8 * sum(int(np.prod(v.shape)) * v.dtype.itemsize for v in g.values())
      channels, d8 = g["gate"].shape[1], g["gate"].shape[2]
      weights += 3 * channels * d8 * 8
  if not weights:
    raise ValueError("no packed MoE layer in these parameters (quantize_model(..., packed=True))")
  return bits / weights


def quantize_model(
  params: dict[str, Any],
  config: ModelConfig,
  scores: dict[int, np.ndarray],
  qc: QuantConfig,
  inputs: dict[int, Any] | None = None,
  *,
  packed: bool = False,
) -> dict[str, Any]:
  """CAMERA-Q over a whole model: every MoE layer ``i`` in ``scores`` gets per-micro-expert bits
  ``assign_bits(scores[i], qc)`` (highest energy -> most bits) and is quantized with ``qc.method`` (GPTQ needs
  ``inputs[i]``, the layer's calibration MLP inputs [T, D] from ``jaxeff.moe.camera.mlp_inputs``);
  ``packed=False`` fake-quantizes in place (``quantize_layer``), ``packed=True`` stores bit-plane codes
  (``pack_layer``). Other layers are returned untouched. Shapes: scores[i] [N] micro-experts (routed e-major,
  then shared).

  Example:
    >>> import jax
    >>> from jaxeff.models import init_params
    >>> cfg = ModelConfig.tiny(model_type="mixtral", n_experts=4, experts_per_token=2, d_expert=16, d_ff=16)
    >>> params = init_params(cfg, jax.random.key(0))
    >>> qc = QuantConfig(bits=(2, 4), ratios=(0.5, 0.5), method="rtn")
    >>> q = quantize_model(params, cfg, {0: np.arange(64.0)}, qc, packed=True)
    >>> sorted(q["layers"][0]["mlp"]), "packed" in q["layers"][1]["mlp"]
    (['packed', 'router'], False)
  """
  bad = sorted(i for i in scores if not 0 <= i < config.n_layers or not config.is_moe(i))
  if bad:
    raise ValueError(f"layers {bad} are not mixture-of-experts layers of this model")
  if qc.method == "gptq" and (inputs is None or any(i not in inputs for i in scores)):
    raise ValueError("GPTQ needs each quantized layer's calibration inputs (jaxeff.moe.camera.mlp_inputs)")
  layer_fn = pack_layer if packed else quantize_layer
  layers = list(params["layers"])
  for i, e in scores.items():
    x = None if inputs is None else inputs[i]
    layers[i] = {**layers[i], "mlp": layer_fn(layers[i]["mlp"], assign_bits(np.asarray(e), qc), qc, x, config)}
  return {**params, "layers": tuple(layers)}


# ------------------------------------------------------------------------------------------------ packing
def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
  """b-bit codes [..., n] (n % 8 == 0) -> uint8 bit-planes [b, ..., n / 8]: exactly b bits per value."""
  codes = np.asarray(codes, np.uint32)
  if codes.shape[-1] % 8:
    raise ValueError(f"the last axis ({codes.shape[-1]}) must be a multiple of 8 to pack")
  if codes.size and codes.max() >= 2**bits:
    raise ValueError(f"codes exceed {bits} bits")
  planes = [np.packbits(((codes >> k) & 1).astype(np.uint8), axis=-1) for k in range(bits)]
  return np.stack(planes)


def unpack_codes(packed, bits: int):
  """Inverse of ``pack_codes`` in jnp: uint8 [b, ..., n/8] -> int32 codes [..., n]
  (``kernels_pallas.dequant_matmul.reference.unpack``, the one bit-plane reader)."""
  from kernels_pallas.dequant_matmul.reference import unpack

  return unpack(packed, bits)


def dequant_matmul(x, packed, scale, zero, bits: int, group_size: int):
  """y = x W_hat^T with W_hat [R, C] dequantized from packed codes (scale/zero [R, C / group_size]), in x's dtype:
  ``kernels_pallas.dequant_matmul.dequant_matmul`` with the implementation chosen by backend."""
  from kernels_pallas.dequant_matmul import dequant_matmul as kernel

  return kernel(x, packed, scale, zero, bits=bits, group=group_size).astype(x.dtype)


# ------------------------------------------------------------------------------------------------ Camera-Q†
def rtn_column_groups(w: np.ndarray, bits_g: np.ndarray, group_size: int) -> np.ndarray:
  """RTN of ``w [R, C]`` where column group g (``group_size`` columns) has its own bits ``bits_g [C / group]``
  (per-row grids inside each group, as ``rtn``). Returns the dequantized [R, C]."""
  w = np.asarray(w, np.float64)
  R, C = w.shape
  if C % group_size or len(bits_g) != C // group_size:
    raise ValueError(f"need {C // group_size} column-group bits for C={C}, group {group_size}; got {len(bits_g)}")
  out = w.copy()
  for g, b in enumerate(np.asarray(bits_g)):
    if b >= 16:
      continue
    blk = w[:, g * group_size : (g + 1) * group_size]
    sc, z = _grid(blk, int(b))
    out[:, g * group_size : (g + 1) * group_size] = _quant(blk, sc, z, int(b))[1]
  return out


def quantize_model_per_matrix(
  params: dict[str, Any], config: ModelConfig, inputs: dict[int, Any], qc: QuantConfig
) -> dict[str, Any]:
  r"""Camera-Q† (the paper's per-matrix ablation; RTN here): each matrix type of a MoE layer is partitioned
  **independently along its input dimension** into column groups of ``qc.group_size``, ranked by the group's
  energy sum_c E[x_c^2] ||W[:, c]||^2 (gate/up: the layer's calibration inputs x routed to the expert; down: the
  expert's hidden activations on those tokens), and given ``qc.bits`` by ``qc.ratios`` across the layer's experts
  (the same mean bits as CAMERA-Q). A micro-expert's three vectors no longer share one precision, which is what
  the ablation removes. The shared expert is ranked with the routed ones (its inputs: every token). Fake-quantized
  (dequantized in place). ``inputs[i]``: layer i's calibration MLP inputs [T, D] (``mlp_inputs``).
  """
  from jaxeff.models.moe import expert_hidden, route

  gs = qc.group_size
  layers = list(params["layers"])
  for i in range(config.n_layers):
    if not config.is_moe(i):
      continue
    m = jax.tree.map(lambda a: np.asarray(a, np.float64), dict(layers[i]["mlp"]))
    x = np.asarray(inputs[i], np.float64)
    idx = np.asarray(route(jnp.asarray(layers[i]["mlp"]["router"]), jnp.asarray(inputs[i]), config)[1])
    h_all = np.asarray(expert_hidden(layers[i]["mlp"], jnp.asarray(inputs[i])), np.float64)  # [T, E, I]
    E = m["down"].shape[0]
    mats = []  # (key path, matrix [R, C], input second moments [C])
    for e in range(E):
      sel = np.any(idx == e, axis=1)
      x2 = (x[sel] ** 2).mean(0) if sel.any() else np.zeros(x.shape[1])
      h2 = (h_all[sel, e] ** 2).mean(0) if sel.any() else np.zeros(h_all.shape[2])
      mats += [(("gate", e), m["gate"][e], x2), (("up", e), m["up"][e], x2), (("down", e), m["down"][e], h2)]
    if "shared" in m:
      sh = m["shared"]
      hs = (np.asarray(jax.nn.silu(x @ sh["gate"].T)) * (x @ sh["up"].T)) ** 2
      x2 = (x**2).mean(0)
      mats += [(("shared", "gate"), sh["gate"], x2), (("shared", "up"), sh["up"], x2)]
      mats += [(("shared", "down"), sh["down"], hs.mean(0))]
    new = {k: (dict(v) if isinstance(v, dict) else v.copy()) for k, v in m.items()}
    bad = sorted({w.shape[1] for _, w, _ in mats if w.shape[1] % gs})
    if bad:
      raise ValueError(f"group_size {gs} does not divide the input dimension(s) {bad}")
    for kind in ("gate", "up", "down"):
      group = [(k, w, mom) for k, w, mom in mats if kind in k]
      energies = np.concatenate([((w**2).sum(0) * mom).reshape(-1, gs).sum(1) for _, w, mom in group])
      bits = assign_bits(energies, qc)
      start = 0
      for k, w, _ in group:
        n = w.shape[1] // gs
        q = rtn_column_groups(w, bits[start : start + n], gs)
        start += n
        if k[0] == "shared":
          new["shared"][k[1]] = q
        else:
          new[k[0]][k[1]] = q
    dt = layers[i]["mlp"]["gate"].dtype
    layers[i] = {**layers[i], "mlp": jax.tree.map(lambda a, dt=dt: jnp.asarray(a, dt), new)}
  return {**params, "layers": tuple(layers)}
