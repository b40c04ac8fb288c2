"""LSA theory against closed forms: gradient flow, trained layers, GD equivalence, the CoT bound, GradS."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxeff.theory import cot_bound as cb
from jaxeff.theory import grads as gs
from jaxeff.theory import lsa
from jaxeff.theory import oracles as O


def test_closed_forms_agree_with_each_other_and_monte_carlo():
  assert O.isotropic_risk(5, 20) == pytest.approx(1.1538, abs=1e-4)
  assert O.isotropic_risk(10, 10) == pytest.approx(5.2381, abs=1e-4)
  assert O.uniform_step(10, 10) == pytest.approx(1.515, abs=1e-3)
  S = np.diag([2.0, 1.5, 1.0, 0.5, 0.25])
  G = O.gamma_matrix(S, 20, 0.1)
  assert O.risk_of_A(np.linalg.inv(G), S, 20, 0.1) == pytest.approx(O.optimal_risk(S, 20, 0.1), abs=1e-12)
  F = 2 * S @ S + np.trace(S) * S  # Gaussian fourth moment
  np.testing.assert_allclose(O.optimal_A(S, 20, 0.1, fourth_moment=F), np.linalg.inv(G), atol=1e-12)
  A = np.linalg.inv(G)
  rng = np.random.default_rng(0)
  B = 100000  # one task w per prompt: the risk averages over w too
  w = rng.standard_normal((B, 5))
  X = rng.standard_normal((B, 20, 5)) * np.sqrt(np.diag(S))
  y = np.einsum("bnd,bd->bn", X, w) + np.sqrt(0.1) * rng.standard_normal((B, 20))
  xq = rng.standard_normal((B, 5)) * np.sqrt(np.diag(S))
  yq = np.einsum("bd,bd->b", xq, w) + np.sqrt(0.1) * rng.standard_normal(B)
  b = np.einsum("bn,bnd->bd", y, X) / 20
  lhs = (np.einsum("bd,de,be->b", b, A, xq) - yq) ** 2
  assert np.mean(lhs) == pytest.approx(O.optimal_risk(S, 20, 0.1), rel=0.03)


@pytest.mark.parametrize("S, N", [(np.eye(5), 20), (np.diag([2, 1.5, 1, 0.5, 0.25]), 20), (np.eye(10), 10)])
def test_zfb_gradient_flow_reaches_gamma_inverse(S, N):
  r = lsa.gradient_flow_uU(S, N)
  G = O.gamma_matrix(S, N)
  Gi = np.linalg.inv(G)
  assert np.abs(r["u"] * r["U"] - Gi).max() / np.abs(Gi).max() < 1e-8
  assert abs(r["u"] - 1 / O.zfb_alpha(G)) * O.zfb_alpha(G) < 1e-2
  assert abs(r["conserved_end"] - r["conserved_start"]) < 1e-2
  assert abs(r["risk"] - O.optimal_risk(S, N)) < 1e-8


def test_adam_trained_zfb_layer_reaches_the_optimum():
  d, n = 5, 20
  res = lsa.train_lsa(jax.random.key(0), d=d, n=n, steps=1500)
  WPV, WKQ = res["params"]
  A = float(WPV[d, d]) * np.asarray(WKQ[:d, :d])
  Gi = np.linalg.inv(O.gamma_matrix(np.eye(d), n))
  assert np.linalg.norm(A - Gi) / np.linalg.norm(Gi) < 0.05
  risk = lsa.evaluate_risk(res["predict"], res["params"], jax.random.key(1), d=d, n=n, prompts=20480)
  assert risk == pytest.approx(O.isotropic_risk(d, n), rel=0.05)


def test_l_layers_are_l_preconditioned_gd_steps_and_readouts_agree():
  with jax.enable_x64(True):
    rng = np.random.default_rng(1)
    d, n = 4, 16
    X, y, xq, w0 = (
      rng.standard_normal((1, n, d)),
      rng.standard_normal((1, n)),
      rng.standard_normal((1, d)),
      rng.standard_normal(d),
    )
    for L in range(1, 6):
      As = [rng.uniform(0.05, 0.3) * np.eye(d) + 0.02 * rng.standard_normal((d, d)) for _ in range(L)]
      Ps, Qs = lsa.ahn_gd_construction(As, d)
      pred = float(lsa.ahn_forward(Ps, Qs, jnp.asarray(X), jnp.asarray(y), jnp.asarray(xq), w0)[0])
      w = w0
      for A in As:  # the construction applies A^T: write the GD steps out plainly
        w = w - A.T @ (X[0].T @ (X[0] @ w - y[0]) / n)
      assert abs(pred - w @ xq[0]) < 1e-10
    A = np.diag(rng.uniform(0.1, 0.5, d))
    zfb = lsa.zfb_uU_predict(3.0, jnp.asarray(A / 3.0), jnp.asarray(X), jnp.asarray(y), jnp.asarray(xq))
    full = lsa.zfb_forward(
      jnp.zeros((d + 1, d + 1)).at[d, d].set(3.0),
      jnp.zeros((d + 1, d + 1)).at[:d, :d].set(A / 3.0),
      lsa.zfb_embed(jnp.asarray(X), jnp.asarray(y), jnp.asarray(xq)),
    )
    Ps, Qs = lsa.ahn_gd_construction([A], d)
    ahn = lsa.ahn_forward(Ps, Qs, jnp.asarray(X), jnp.asarray(y), jnp.asarray(xq))
    np.testing.assert_allclose([float(zfb[0]), float(full[0])], float(ahn[0]), atol=1e-12)
    assert float(ahn[0]) == pytest.approx(O.gd_step(np.zeros(d), X[0], y[0], A) @ xq[0], abs=1e-12)


def test_cot_bound_holds_limits_and_both_regimes():
  with jax.enable_x64(True):
    f = cb.lsa_cot_step(8)
    x0 = np.random.default_rng(1).standard_normal(8)
    x0 /= np.linalg.norm(x0)
    radii = []
    for s in (0.5, 0.8, 1.0, 1.2):
      r = cb.cot_experiment(f, s * x0, directions=16)
      assert np.all(r["amplification"] <= r["bound"] + 1e-12)  # never exceeded
      assert r["A"] <= r["C"] + 1e-12 and not r["regime_decreasing"]  # h_1 = f(0, x): A <= C
      assert r["amplification"][-1] >= r["amplification"][0]  # so amplification does not fall with K
      assert r["amplification"][-1] == pytest.approx(r["fixed_point_amplification"], rel=1e-2)
      radii.append(r["radius"])
    assert all(b < a for a, b in zip(radii, radii[1:]))  # larger input norms tolerate less
    hi = cb.cot_experiment(f, 0.5 * x0, first_step=3.0 * np.eye(8), directions=16)
    assert 0 < hi["amplification"][-1] < 0.25 * hi["amplification"][0]  # the high-gain regime of claim (i)
  # the radius tends to its K -> inf limit R (1 - gamma) / C
  for K, tol in ((10, 1e-2), (60, 1e-12)):
    assert cb.tolerable_radius(1e-2, 0.3, 0.6, 0.2, K=K) == pytest.approx(
      cb.tolerable_radius(1e-2, 0.3, 0.6, 0.2, K=None), rel=tol
    )
  with pytest.raises(ValueError, match="gamma"):
    cb.theorem1_bound(1.0, 1.2, 1.0, K=3)
  assert cb.output_fluctuation(["7"] * 5) == 0.0
  assert cb.output_fluctuation(list("abcde")) == pytest.approx(1.0)


def test_grads_lsa_score_is_the_leave_one_out_effect():
  with jax.enable_x64(True):
    rng = np.random.default_rng(2)
    d, n = 8, 16
    X, y, xq, w0 = rng.standard_normal((n, d)), rng.standard_normal(n), rng.standard_normal(d), rng.standard_normal(d)
    A = np.diag(rng.uniform(0.1, 1.0, d))
    g = gs.lsa_scores(X, y, xq, w0, A)
    np.testing.assert_allclose(g, gs.leave_one_out(X, y, xq, w0, A), atol=1e-12)
    auto = jax.grad(lambda a: gs.lsa_predict(X, y, xq, w0, A, a))(jnp.ones(n))
    np.testing.assert_allclose(g, np.asarray(auto), atol=1e-12)
    y2 = y.copy()
    y2[3] = w0 @ X[3]  # already learned
    X2 = X.copy()
    X2[5] -= (X2[5] @ A @ xq) / (xq @ A @ A @ xq) * (A @ xq)  # irrelevant: x_5^T A x_q = 0
    g2 = gs.lsa_scores(X2, y2, xq, w0, A)
    assert abs(g2[3]) < 1e-12 and abs(g2[5]) < 1e-12


def test_grads_selection_beats_baselines_and_its_known_failure():
  r = gs.selection_experiment(queries=500)
  assert r["grads"] < min(v for k, v in r.items() if k != "grads")
  assert r["grads"] <= 0.6 * r["topk"]
  bad = gs.selection_experiment(queries=500, eta=4 / (4 + 8 + 1))  # step tuned for random demonstrations
  assert bad["grads"] > bad["random"]  # the documented limitation: GradS overshoots with large steps


def test_depth_amplification_closed_form():
  r = gs.depth_amplification()
  np.testing.assert_allclose(r["scores"], r["closed_form"], atol=1e-12)
  assert np.all(np.diff(r["gap"]) > 0) and np.all(np.diff(r["top_share"]) > 0)
  assert math.isclose(r["gap"][-1] / r["gap"][0], (1 + 0.5 / 8) ** 8, rel_tol=1e-9)


def test_llm_selector_same_ranking_batched_and_one_by_one():
  from jaxeff.config import ModelConfig
  from jaxeff.models import init_params

  cfg = ModelConfig.tiny(max_position_embeddings=128)
  params = init_params(cfg, jax.random.key(0), std=0.3)
  rng = np.random.default_rng(0)
  demos = [list(rng.integers(0, 250, size=5 if i % 2 else 8)) for i in range(6)]  # two lengths: few compiles
  query, answer = [5, 6, 7, 8], [9, 10]
  for scorer in ("G1", "G2", "G3", "cosine", "bm25"):
    batched = gs.GradSelector(cfg, params, scorer=scorer, batch_size=64).scores(demos, query, answer)
    single = np.concatenate(
      [gs.GradSelector(cfg, params, scorer=scorer, batch_size=1).scores([d], query, answer) for d in demos]
    )
    if scorer == "bm25":  # idf depends on the pool, so one-by-one pools differ: batch size alone must not matter
      single = gs.GradSelector(cfg, params, scorer=scorer, batch_size=1).scores(demos, query, answer)
    np.testing.assert_allclose(batched, single, rtol=2e-4, atol=1e-6)
    assert list(np.argsort(-batched, kind="stable")) == list(np.argsort(-single, kind="stable"))
  with pytest.raises(ValueError, match="unknown scorer"):
    gs.GradSelector(cfg, params, scorer="G9")
