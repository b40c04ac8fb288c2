r"""Linear self-attention (LSA) models in their papers' exact layouts, in-context regression data, training.

* **ZFB** (Zhang, Frei, Bartlett): E = [[x_1 .. x_N, x_q], [y_1 .. y_N, 0]] in R^{(d+1) x (N+1)} (tokens as
  columns), f(E) = E + W^PV E (E^T W^KQ E) / N, no mask, y^ = f(E)[d, N] (0-indexed). With W^PV = u e e^T and
  W^KQ = [[U, 0], [0, 0]] (the only blocks gradient flow moves from ZFB's init): y^ = (u/N) sum_i y_i x_i^T U x_q.
* **Ahn et al.** (multi-layer): Z_{l+1} = Z_l + P_l Z_l M (Z_l^T Q_l Z_l) / n with M = diag(1, .., 1, 0) (the
  query is not a key), y^ = -Z_L[d, n]. The sparse construction P_l = e e^T, Q_l = -[[A_l, 0], [0, 0]] runs L
  steps of preconditioned GD; starting the y-row at the residuals y_i - w_0^T x_i (and -w_0^T x_q) starts GD at a
  prior w_0 (von Oswald et al.'s construction with W_V bottom row [W_0, -1]).
* Data: w ~ N(0, I), x ~ N(0, S) or U(-1, 1)^d, optional label noise.
* Training: gradient flow on the exact population risk of the (u, U) parameterisation (Euler steps, float64),
  and Adam (optax) on sampled prompts for the full (d+1)^2 layer or an L-layer Ahn stack.

Example:
  >>> X, y, xq, yq = icl_data(jax.random.key(0), batch=2, n=5, d=3)
  >>> zfb_embed(X, y, xq).shape
  (2, 4, 6)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax


def icl_data(key, *, batch: int, n: int, d: int, cov=None, noise: float = 0.0, dist: str = "gaussian"):
  """In-context regression prompts: X [B, n, d], y [B, n], x_q [B, d], y_q [B] with w ~ N(0, I_d)."""
  kw, kx, kq, ke, keq = jax.random.split(key, 5)
  w = jax.random.normal(kw, (batch, d))
  if dist == "uniform":
    X = jax.random.uniform(kx, (batch, n, d), minval=-1.0, maxval=1.0)
    xq = jax.random.uniform(kq, (batch, d), minval=-1.0, maxval=1.0)
  elif dist == "gaussian":
    L = jnp.eye(d) if cov is None else jnp.linalg.cholesky(jnp.asarray(cov))
    X = jax.random.normal(kx, (batch, n, d)) @ L.T
    xq = jax.random.normal(kq, (batch, d)) @ L.T
  else:
    raise ValueError(f"dist must be 'gaussian' or 'uniform', got {dist!r}")
  y = jnp.einsum("bnd,bd->bn", X, w) + noise * jax.random.normal(ke, (batch, n))
  yq = jnp.einsum("bd,bd->b", xq, w) + noise * jax.random.normal(keq, (batch,))
  return X, y, xq, yq


def zfb_embed(X, y, xq):
  """E [B, d+1, n+1]: columns (x_i, y_i) and (x_q, 0)."""
  top = jnp.concatenate([jnp.swapaxes(X, 1, 2), xq[:, :, None]], axis=2)
  bottom = jnp.concatenate([y, jnp.zeros_like(y[:, :1])], axis=1)[:, None, :]
  return jnp.concatenate([top, bottom], axis=1)


def zfb_forward(WPV, WKQ, E):
  """f(E) = E + W^PV E (E^T W^KQ E) / N (N = columns - 1); returns y^ = f(E)[d, N] [B]."""
  N = E.shape[-1] - 1
  out = E + WPV @ E @ (jnp.swapaxes(E, 1, 2) @ WKQ @ E) / N
  return out[:, -1, -1]


def zfb_uU_predict(u, U, X, y, xq):
  """(u/N) sum_i y_i x_i^T U x_q."""
  b = jnp.einsum("bn,bnd->bd", y, X) / X.shape[1]
  return u * jnp.einsum("bd,de,be->b", b, U, xq)


def ahn_forward(Ps, Qs, X, y, xq, w0=None):
  """Ahn's L-layer masked LSA on Z [B, d+1, n+1]; y^ = -Z_L[d, n]. With ``w0`` the y-row starts at the
  residuals (a GD prior)."""
  B, n, d = X.shape
  w0 = jnp.zeros((d,)) if w0 is None else jnp.asarray(w0)
  r = y - jnp.einsum("bnd,d->bn", X, w0)
  Z = zfb_embed(X, r, xq)
  Z = Z.at[:, -1, -1].set(-jnp.einsum("bd,d->b", xq, w0))
  M = jnp.diag(jnp.concatenate([jnp.ones(n), jnp.zeros(1)]))
  for P, Q in zip(Ps, Qs):
    Z = Z + P @ Z @ M @ (jnp.swapaxes(Z, 1, 2) @ Q @ Z) / n
  return -Z[:, -1, -1]


def ahn_gd_construction(As, d: int):
  """P_l = e e^T, Q_l = -[[A_l, 0], [0, 0]]: the stack that runs preconditioned GD with steps A_l."""
  e = jnp.zeros((d + 1, d + 1)).at[d, d].set(1.0)
  Qs = [-jnp.zeros((d + 1, d + 1)).at[:d, :d].set(jnp.asarray(A)) for A in As]
  return [e] * len(As), Qs


def population_risk_uU(u, U, S, N: int, s2: float = 0.0):
  """Exact population risk of the (u, U) model for Gaussian x (A = u U, see ``oracles.risk_of_A``)."""
  A = u * U
  G = (N + 1) / N * S + (jnp.trace(S) + s2) / N * jnp.eye(S.shape[0])
  return jnp.trace(S @ A.T @ S @ G @ A) - 2 * jnp.trace(S @ A.T @ S) + jnp.trace(S) + s2


def gradient_flow_uU(
  S, N: int, *, sigma: float = 1e-2, dt: float = 1e-2, steps: int = 20000, s2: float = 0.0, theta=None
):
  """ZFB gradient flow (Euler, float64) on the exact population risk from the balanced init u = sigma,
  U = sigma Theta Theta^T with ||Theta Theta^T||_F = 1 (Theta = I/d^(1/4) by default). Returns (u, U, risk,
  conserved u^2 - ||U||_F^2 at start and end)."""
  with jax.enable_x64(True):
    S = jnp.asarray(S, jnp.float64)
    d = S.shape[0]
    T = jnp.eye(d) / jnp.sqrt(jnp.sqrt(d)) if theta is None else jnp.asarray(theta, jnp.float64)
    TT = T @ T.T
    TT = TT / jnp.linalg.norm(TT)
    u0, U0 = jnp.asarray(sigma, jnp.float64), sigma * TT
    grad = jax.grad(lambda p: population_risk_uU(p[0], p[1], S, N, s2))

    @jax.jit
    def run(p):
      def body(p, _):
        g = grad(p)
        return (p[0] - dt * g[0], p[1] - dt * g[1]), None

      return jax.lax.scan(body, p, None, length=steps)[0]

    u, U = run((u0, U0))
    risk = float(population_risk_uU(u, U, S, N, s2))
    return {
      "u": float(u),
      "U": np.asarray(U),
      "risk": risk,
      "conserved_start": float(u0**2 - jnp.sum(U0**2)),
      "conserved_end": float(u**2 - jnp.sum(U**2)),
    }


def train_lsa(
  key,
  *,
  d: int,
  n: int,
  layers: int = 1,
  model: str = "zfb",
  steps: int = 3000,
  batch: int = 512,
  lr: float = 3e-3,
  init_scale: float = 0.02,
  cov=None,
  noise: float = 0.0,
  progress: bool = False,
) -> dict[str, Any]:
  """Adam (optax, cosine-decayed lr) on sampled prompts: ``model="zfb"`` (one full (d+1)^2 layer pair) or
  ``"ahn"`` (``layers`` masked layers with full P_l, Q_l). Returns the parameters and the loss history."""
  kinit, kdata = jax.random.split(key)
  e = d + 1
  shapes = [(e, e)] * (2 if model == "zfb" else 2 * layers)
  keys = jax.random.split(kinit, len(shapes))
  params = [init_scale * jax.random.normal(k, s) for k, s in zip(keys, shapes)]

  def predict(params, X, y, xq):
    if model == "zfb":
      return zfb_forward(params[0], params[1], zfb_embed(X, y, xq))
    return ahn_forward(params[0::2], params[1::2], X, y, xq)

  def loss(params, key):
    X, y, xq, yq = icl_data(key, batch=batch, n=n, d=d, cov=cov, noise=noise)
    return jnp.mean((predict(params, X, y, xq) - yq) ** 2)

  opt = optax.adam(optax.cosine_decay_schedule(lr, steps, alpha=0.1))
  state = opt.init(params)

  @jax.jit
  def step(params, state, key):
    val, g = jax.value_and_grad(loss)(params, key)
    upd, state = opt.update(g, state, params)
    return optax.apply_updates(params, upd), state, val

  hist = []
  it = range(steps)
  if progress:
    from tqdm.auto import trange

    it = trange(steps, desc=f"train {model}")
  for t in it:
    params, state, val = step(params, state, jax.random.fold_in(kdata, t))
    if t % 100 == 0 or t == steps - 1:
      hist.append(float(val))
  return {"params": params, "history": hist, "predict": predict}


def evaluate_risk(
  predict, params, key, *, d: int, n: int, prompts: int = 20480, cov=None, noise: float = 0.0
) -> float:
  """Mean squared error on ``prompts`` fresh prompts (>= 2e4: 512 gives ~10 % standard error)."""
  tot, done, i = 0.0, 0, 0
  while done < prompts:
    b = min(4096, prompts - done)
    X, y, xq, yq = icl_data(jax.random.fold_in(key, i), batch=b, n=n, d=d, cov=cov, noise=noise)
    tot += float(jnp.sum((predict(params, X, y, xq) - yq) ** 2))
    done += b
    i += 1
  return tot / prompts


def paired_risk(
  predict_a, params_a, predict_b, params_b, key, *, d: int, n: int, prompts: int = 20480, cov=None, noise=0.0
) -> dict[str, Any]:
  """Two predictors' risks on the **same** prompts, their difference and its 95 % interval (normal, from the
  per-prompt paired differences). Squared errors are heavy-tailed: an unpaired risk on 2e4 prompts is ~1-3 % off
  its expectation, the paired difference far less. Returns {"risk_a", "risk_b", "diff", "ci95", "se_a"}."""
  ea, eb, done, i = [], [], 0, 0
  while done < prompts:
    b = min(4096, prompts - done)
    X, y, xq, yq = icl_data(jax.random.fold_in(key, i), batch=b, n=n, d=d, cov=cov, noise=noise)
    ea.append(np.asarray((predict_a(params_a, X, y, xq) - yq) ** 2, np.float64))
    eb.append(np.asarray((predict_b(params_b, X, y, xq) - yq) ** 2, np.float64))
    done += b
    i += 1
  ea, eb = np.concatenate(ea), np.concatenate(eb)
  dif = ea - eb
  se = float(dif.std(ddof=1) / np.sqrt(len(dif)))
  return {
    "risk_a": float(ea.mean()),
    "risk_b": float(eb.mean()),
    "diff": float(dif.mean()),
    "ci95": (float(dif.mean() - 1.96 * se), float(dif.mean() + 1.96 * se)),
    "se_a": float(ea.std(ddof=1) / np.sqrt(len(ea))),
  }


def paired_risk_vs_optimum(predict, params, key, *, d: int, n: int, prompts: int = 20480) -> dict[str, Any]:
  """``paired_risk`` of a predictor against the analytic optimum A* = Gamma^-1 (isotropic inputs, noiseless;
  predicted as ``zfb_uU_predict(1, Gamma^-1, ...)``) on the same prompts: its ``risk_b`` estimates R*."""
  from jaxeff.theory.oracles import gamma_matrix

  Gi = jnp.asarray(np.linalg.inv(gamma_matrix(np.eye(d), n)), jnp.float32)
  return paired_risk(
    predict, params, lambda _, X, y, xq: zfb_uU_predict(1.0, Gi, X, y, xq), None, key, d=d, n=n, prompts=prompts
  )
