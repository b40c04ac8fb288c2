r"""Closed forms for linear self-attention (LSA) on in-context linear regression (float64 oracles).

Setting: w ~ N(0, I_d), x_i ~ N(0, S) (or U(-1, 1)^d), y_i = w^T x_i + eps_i with Var eps = s2; a one-layer LSA
predicts y_q = x_q^T A b with b = (1/N) sum_i y_i x_i (Zhang, Frei and Bartlett, JMLR 2024; Ahn et al.,
NeurIPS 2023; von Oswald et al., ICML 2023).

* Gamma = ((N+1)/N) S + ((tr S + s2)/N) I; the optimal A* = Gamma^-1 (Gaussian x); risk
  R* = tr S - tr(S^2 Gamma^-1) + s2; isotropic: A* = N/(N+d+1+s2) I, R* = d(d+1+s2)/(N+d+1+s2) + s2
  (noiseless d(d+1)/(N+d+1): 1.1538 at d = 5, N = 20).
* General x with fourth moment F = E[(x x^T)^2]: A* = S (F/N + ((N-1)/N) S^2 + s2 S/N)^-1; uniform x:
  S = I/3, F = (1/5 + (d-1)/9) I.
* ZFB gradient flow from a balanced init: u U -> Gamma^-1, u -> 1/alpha, alpha = (tr Gamma^-2)^(-1/4).
* One LSA layer = one step of preconditioned GD, w_1 = w_0 - A grad L(w_0), L(w) = (1/2N) sum (w^T x_i - y_i)^2.
* CoT fixed point: eps_inf = (I - J_h)^-1 J_x delta (implicit function theorem).

Example:
  >>> round(isotropic_risk(5, 20), 4), round(isotropic_risk(10, 10), 4)
  (1.1538, 5.2381)
"""

from __future__ import annotations

import numpy as np


def gamma_matrix(S, N: int, s2: float = 0.0) -> np.ndarray:
  """Gamma = ((N+1)/N) S + ((tr S + s2)/N) I."""
  S = np.asarray(S, np.float64)
  return (N + 1) / N * S + (np.trace(S) + s2) / N * np.eye(len(S))


def optimal_A(S, N: int, s2: float = 0.0, *, fourth_moment=None) -> np.ndarray:
  """A* for the one-layer predictor: Gamma^-1 for Gaussian x, or S (F/N + ((N-1)/N) S^2 + s2 S/N)^-1 given F."""
  S = np.asarray(S, np.float64)
  if fourth_moment is None:
    return np.linalg.inv(gamma_matrix(S, N, s2))
  F = np.asarray(fourth_moment, np.float64)
  return S @ np.linalg.inv(F / N + (N - 1) / N * S @ S + s2 * S / N)


def risk_of_A(A, S, N: int, s2: float = 0.0) -> float:
  """Population risk of y^ = x_q^T A^T b for Gaussian x: tr(S A^T S Gamma A) - 2 tr(S A^T S) + tr S + s2."""
  A, S = np.asarray(A, np.float64), np.asarray(S, np.float64)
  G = gamma_matrix(S, N, s2)
  return float(np.trace(S @ A.T @ S @ G @ A) - 2 * np.trace(S @ A.T @ S) + np.trace(S) + s2)


def optimal_risk(S, N: int, s2: float = 0.0) -> float:
  """R* = tr S - tr(S^2 Gamma^-1) + s2."""
  S = np.asarray(S, np.float64)
  return float(np.trace(S) - np.trace(S @ S @ np.linalg.inv(gamma_matrix(S, N, s2))) + s2)


def isotropic_risk(d: int, N: int, s2: float = 0.0) -> float:
  """d (d + 1 + s2) / (N + d + 1 + s2) + s2."""
  return d * (d + 1 + s2) / (N + d + 1 + s2) + s2


def uniform_step(d: int, N: int) -> float:
  """The optimal scalar step for x ~ U(-1, 1)^d: (1/3) / ((1/5 + (d-1)/9)/N + (N-1)/(9N)) (1.515 at d = N = 10)."""
  return (1 / 3) / ((1 / 5 + (d - 1) / 9) / N + (N - 1) / (9 * N))


def zfb_alpha(Gamma) -> float:
  """alpha = (tr Gamma^-2)^(-1/4): the ZFB gradient-flow limit has u = 1/alpha, U = alpha Gamma^-1."""
  Gi = np.linalg.inv(np.asarray(Gamma, np.float64))
  return float(np.trace(Gi @ Gi) ** -0.25)


def gd_step(w0, X, y, A) -> np.ndarray:
  """w_1 = w_0 - A grad L(w_0) with L(w) = (1/2N) sum_i (w^T x_i - y_i)^2; X [N, d], y [N]."""
  X, y, w0 = (np.asarray(v, np.float64) for v in (X, y, w0))
  grad = X.T @ (X @ w0 - y) / len(y)
  return w0 - np.asarray(A, np.float64) @ grad


def gd_steps(w0, X, y, As) -> np.ndarray:
  """L steps of preconditioned GD with preconditioners ``As`` (one per step)."""
  w = np.asarray(w0, np.float64)
  for A in As:
    w = gd_step(w, X, y, A)
  return w


def cot_limit(J_h, J_x, delta) -> np.ndarray:
  """eps_inf = (I - J_h)^-1 J_x delta."""
  J_h = np.asarray(J_h, np.float64)
  return np.linalg.solve(np.eye(len(J_h)) - J_h, np.asarray(J_x, np.float64) @ np.asarray(delta, np.float64))
