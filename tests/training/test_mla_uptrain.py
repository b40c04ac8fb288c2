"""MLA uptraining (MHA2MLA's recovery fine-tune) runs the trainer's own step: from the trainer's initial
parameters it retraces the trainer's loss curve; on an MLA-converted model it lowers the held-out loss and
leaves frozen leaves untouched."""

import jax
import numpy as np
import pytest

from jaxeff.kvcache.mla import to_mla
from jaxeff.models import init_params
from jaxeff.training import train_and_evaluate
from jaxeff.training.mla import uptrain
from tests.training.test_trainer import tiny_cfg


def test_uptrain_is_the_trainers_step(tmp_path):
  cfg = tiny_cfg(steps=12, checkpoint_every=0, eval_every=0)
  ref = train_and_evaluate(cfg, tmp_path / "run", progress=False, export=False)
  params = init_params(ref.model_config, jax.random.key(cfg.seed))
  got = uptrain(ref.model_config, params, cfg, progress=False)
  want = [h["loss"] for h in ref.history if "loss" in h]
  np.testing.assert_allclose([h["loss"] for h in got.history], want, rtol=2e-5)
  np.testing.assert_allclose(got.val_after["loss"], ref.final_eval["loss"], rtol=2e-5)


def test_uptraining_an_mla_model_recovers_held_out_loss_and_keeps_frozen_leaves():
  cfg = tiny_cfg(steps=80, checkpoint_every=0, eval_every=0, lr=1e-2)
  mcfg = cfg.model
  trained = uptrain(mcfg, init_params(mcfg, jax.random.key(0)), cfg, progress=False)  # something to lose
  _, pm, _, _ = to_mla(mcfg, trained.params, pairs=1, cache_ratio=0.5)
  res = uptrain(mcfg, pm, _with(cfg, steps=30, lr=3e-3, trainable="mla_down|k_nope_up|v_up|k_rope"), progress=False)
  original = trained.val_after["loss"]
  assert res.val_before["loss"] > original + 0.01  # the conversion costs held-out loss
  assert res.val_after["loss"] < res.val_before["loss"] - 0.01  # uptraining wins back part of it
  attn0, attn1 = pm["layers"][0]["attn"], res.params["layers"][0]["attn"]
  np.testing.assert_array_equal(np.asarray(attn0["q"]), np.asarray(attn1["q"]))  # frozen
  assert not np.array_equal(np.asarray(attn0["mla_down"]), np.asarray(attn1["mla_down"]))
  with pytest.raises(ValueError, match="matches no parameter"):
    uptrain(mcfg, pm, _with(cfg, trainable="nothing_here"), progress=False)


def _with(cfg, **kw):
  import dataclasses

  return dataclasses.replace(cfg, **kw)
