"""The trainer: loss goes down, exact kill-and-resume, sharded = single device, frozen = frozen, clear errors."""

import dataclasses
import json
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxeff import sharding as shard_lib
from jaxeff.config import ModelConfig
from jaxeff.models import init_params, param_logical_axes
from jaxeff.training import TrainConfig, load_train_config, make_optimizer, make_train_step, train_and_evaluate
from jaxeff.training.presets import smoke
from jaxeff.training.trainer import evaluate, lr_schedule, trainable_mask


def tiny_cfg(**kw):
  base = dict(
    model=ModelConfig.tiny(d_model=32, n_heads=2, n_kv_heads=1, head_dim=16, d_ff=64),
    max_documents=12,
    seq_len=32,
    batch_size=8,
    steps=24,
    lr=3e-3,
    warmup_steps=3,
    eval_every=12,
    eval_batches=1,
    checkpoint_every=8,
    log_every=1,
  )
  base.update(kw)
  return TrainConfig(**base)


def test_loss_decreases(tmp_path):
  res = train_and_evaluate(tiny_cfg(steps=40, checkpoint_every=0), tmp_path, progress=False, export=False)
  losses = [h["loss"] for h in res.history if "loss" in h]
  assert np.mean(losses[-5:]) < np.mean(losses[:3]) - 0.5
  assert res.final_eval["bits_per_byte"] < 8.0


_RUN = textwrap.dedent(
  """
  import json, os, signal, sys
  from jaxeff.training import TrainConfig, train_and_evaluate
  cfg = TrainConfig.from_dict(json.loads(sys.argv[1]))
  kill = int(sys.argv[3]) if len(sys.argv) > 3 else None
  def crash(step):  # SIGKILL right after the kill step's checkpoint save started
    if step == kill:
      os.kill(os.getpid(), signal.SIGKILL)
  train_and_evaluate(cfg, sys.argv[2], progress=False, on_checkpoint=crash)
  """
)


def _run(cfg, workdir, kill=None):
  argv = [sys.executable, "-c", _RUN, json.dumps(cfg.to_dict()), str(workdir)] + ([str(kill)] if kill else [])
  return subprocess.run(argv, capture_output=True, text=True, timeout=600)


def _losses(workdir):
  out = {}
  for line in (workdir / "metrics.jsonl").read_text().splitlines():
    rec = json.loads(line)
    if "loss" in rec:
      out[rec["step"]] = rec["loss"]  # a resumed run rewrites steps after its checkpoint: keep the last
  return out


def test_kill_and_resume_is_bit_exact(tmp_path):
  cfg = tiny_cfg()
  ref = _run(cfg, tmp_path / "ref")
  assert ref.returncode == 0, ref.stderr[-2000:]
  killed = _run(cfg, tmp_path / "run", kill=16)
  assert killed.returncode == -9  # SIGKILL, right after the step-16 save was started
  assert not (tmp_path / "run" / "export").exists()
  resumed = _run(cfg, tmp_path / "run")
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert (tmp_path / "run" / "export" / "model.safetensors").read_bytes() == (
    tmp_path / "ref" / "export" / "model.safetensors"
  ).read_bytes()
  assert _losses(tmp_path / "run") == _losses(tmp_path / "ref")


def test_sharded_step_equals_single_device():
  cfg = tiny_cfg(mesh_data=2, mesh_fsdp=2, mesh_tensor=2)
  mc = cfg.model
  params = init_params(mc, jax.random.key(0))
  opt = make_optimizer(cfg, params)
  step = make_train_step(cfg, mc, opt, trainable_mask(params, ".*"))
  rng = np.random.RandomState(0)
  inputs = rng.randint(0, mc.vocab_size, (8, 32)).astype(np.int32)
  targets = rng.randint(0, mc.vocab_size, (8, 32)).astype(np.int32)
  mask = np.ones((8, 32), np.float32)
  p1, _, m1 = jax.jit(step)(params, opt.init(params), inputs, targets, mask)
  mesh = shard_lib.make_mesh(2, 2, 2)
  with jax.set_mesh(mesh):
    ps = jax.device_put(params, shard_lib.tree_shardings(param_logical_axes(mc), params, mesh))
    bs = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp"), None))
    p2, _, m2 = jax.jit(step)(ps, opt.init(ps), *(jax.device_put(x, bs) for x in (inputs, targets, mask)))
  assert len(p2["layers"][0]["mlp"]["up"].sharding.device_set) == 8
  np.testing.assert_allclose(float(m2["loss"]), float(m1["loss"]), rtol=1e-6)
  # Adam's first step divides each gradient entry by its own magnitude, so float re-association across shards
  # in near-zero gradient entries shows up at ~1e-3 of the update size (lr 1e-3 here): 1e-5 absolute.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5), p1, p2)


def test_grad_accumulation_matches_full_batch():
  cfg1, cfg2 = tiny_cfg(), tiny_cfg(grad_accum=4)
  mc = cfg1.model
  params = init_params(mc, jax.random.key(1))
  rng = np.random.RandomState(1)
  x = rng.randint(0, mc.vocab_size, (8, 32)).astype(np.int32)
  y = rng.randint(0, mc.vocab_size, (8, 32)).astype(np.int32)
  mask = (rng.rand(8, 32) > 0.3).astype(np.float32)  # uneven token counts per micro-batch
  outs = []
  for cfg in (cfg1, cfg2):
    opt = make_optimizer(cfg, params)
    outs.append(
      jax.jit(make_train_step(cfg, mc, opt, trainable_mask(params, ".*")))(params, opt.init(params), x, y, mask)
    )
  np.testing.assert_allclose(float(outs[0][2]["loss"]), float(outs[1][2]["loss"]), rtol=1e-6)
  np.testing.assert_allclose(float(outs[0][2]["grad_norm"]), float(outs[1][2]["grad_norm"]), rtol=1e-5)


def test_trainable_filter_freezes_the_rest_bit_for_bit():
  cfg = tiny_cfg(trainable=r"^layers/1/mlp/")
  mc = cfg.model
  params = init_params(mc, jax.random.key(2))
  params["layers"][0]["attn"]["q"] = params["layers"][0]["attn"]["q"].at[0, 0, 0].set(-0.0)
  opt = make_optimizer(cfg, params)
  mask = trainable_mask(params, cfg.trainable)
  step = jax.jit(make_train_step(cfg, mc, opt, mask))
  rng = np.random.RandomState(2)
  x = rng.randint(0, mc.vocab_size, (8, 32)).astype(np.int32)
  new, state = params, opt.init(params)
  for _ in range(3):
    new, state, _ = step(new, state, x, x, np.ones((8, 32), np.float32))
  flat_m = jax.tree.leaves(mask)
  for t, a, b in zip(flat_m, jax.tree.leaves(params), jax.tree.leaves(new)):
    if t:
      assert not np.array_equal(np.asarray(a), np.asarray(b))
    else:
      assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


def test_schedules():
  cfg = tiny_cfg(steps=100, warmup_steps=10, lr=1.0, min_lr_ratio=0.1)
  s = lr_schedule(cfg)
  assert float(s(0)) == pytest.approx(0.1) and float(s(10)) == pytest.approx(1.0)
  assert float(s(99)) == pytest.approx(0.1, abs=2e-3)
  w = lr_schedule(dataclasses.replace(cfg, schedule="wsd", decay_fraction=0.2))
  assert float(w(50)) == pytest.approx(1.0) and float(w(100)) == pytest.approx(0.1)


@pytest.mark.parametrize(
  "change, needle",
  [
    (dict(lr=-1e-3), "lr must be > 0"),
    (dict(batch_size=6, mesh_data=4), "not divisible by the data axes"),
    (dict(batch_size=8, grad_accum=3), "not divisible by grad_accum"),
    (dict(corpora=("python", "wiki"), weights=(1.0, 1.0)), "unknown corpora"),
    (dict(schedule="linear"), "schedule must be one of"),
    (dict(seq_len=5000), "max_position_embeddings"),
  ],
)
def test_bad_configs_fail_before_any_work(change, needle):
  with pytest.raises(ValueError, match=needle):
    tiny_cfg(**change)


def test_unknown_keys_are_named(tmp_path):
  with pytest.raises(ValueError, match="unknown config key 'learning_rate'"):
    smoke().override(["learning_rate=1e-3"])
  with pytest.raises(ValueError, match="unknown key 'model.hidden'"):
    TrainConfig.from_dict({**smoke().to_dict(), "model": {**smoke().to_dict()["model"], "hidden": 3}})
  f = tmp_path / "c.yaml"
  f.write_text("steps: 5\nmodel:\n  d_model: 32\n  n_heads: 2\n  n_kv_heads: 1\nbogus: 1\n")
  with pytest.raises(ValueError, match="unknown key .bogus."):
    load_train_config(str(f))


def test_yaml_config_and_overrides(tmp_path):
  f = tmp_path / "c.yaml"
  f.write_text("steps: 5\nlr: 0.01\nmodel:\n  d_model: 32\n  n_heads: 2\n  n_kv_heads: 1\n")
  cfg = load_train_config(str(f), ["steps=7", "model.d_ff=96", "corpora=python", "weights=1"])
  assert cfg.steps == 7 and cfg.lr == 0.01 and cfg.model.d_model == 32 and cfg.model.d_ff == 96


def test_resume_refuses_a_different_config(tmp_path):
  train_and_evaluate(tiny_cfg(steps=8), tmp_path, progress=False, export=False)
  with pytest.raises(ValueError, match="different config"):
    train_and_evaluate(tiny_cfg(steps=8, lr=1e-2), tmp_path, progress=False, export=False)


def test_bf16_compute_trains(tmp_path):
  res = train_and_evaluate(
    tiny_cfg(steps=20, compute_dtype="bfloat16", checkpoint_every=0), tmp_path, progress=False, export=False
  )
  assert jax.tree.leaves(res.params)[0].dtype == jnp.float32
  losses = [h["loss"] for h in res.history]
  assert losses[-1] < losses[0]


def test_evaluate_refuses_zero_tokens():
  cfg = tiny_cfg()
  params = init_params(cfg.model, jax.random.key(0))
  with pytest.raises(ValueError, match="no scored tokens"):
    evaluate(params, [], config=cfg.model)


def _damage(step_dir):
  """Truncate the largest file of a checkpoint's params to half (a disk that filled up mid-write)."""
  files = sorted((p for p in (step_dir / "params").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
  big = files[-1]
  big.write_bytes(big.read_bytes()[: big.stat().st_size // 2])
  return big


def test_resume_falls_back_to_the_previous_intact_checkpoint(tmp_path):
  cfg = tiny_cfg()
  ref = _run(cfg, tmp_path / "ref")
  assert ref.returncode == 0, ref.stderr[-2000:]
  assert _run(cfg, tmp_path / "run", kill=24).returncode == -9  # the step-24 save never commits
  ckpts = tmp_path / "run" / "checkpoints"
  assert {8, 16} <= {int(p.name) for p in ckpts.iterdir() if p.name.isdigit()}
  _damage(ckpts / "16")
  resumed = _run(cfg, tmp_path / "run")
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert "checkpoint step 16" in resumed.stderr and "is damaged" in resumed.stderr
  assert (tmp_path / "run" / "damaged_checkpoints" / "16" / "params").is_dir()  # kept, not deleted
  assert (tmp_path / "run" / "export" / "model.safetensors").read_bytes() == (
    tmp_path / "ref" / "export" / "model.safetensors"
  ).read_bytes()  # resumed from step 8: the same run, bit for bit


def test_resume_with_every_checkpoint_damaged_is_one_clear_error(tmp_path, capsys):
  from jaxeff import cli

  cfg = tiny_cfg(steps=16)
  assert _run(cfg, tmp_path / "run", kill=16).returncode == -9  # step 8 committed, step 16 never
  _damage(tmp_path / "run" / "checkpoints" / "8")
  (tmp_path / "c.json").write_text(json.dumps(cfg.to_dict()))
  code = cli.main(["train", "--config", str(tmp_path / "c.json"), "--workdir", str(tmp_path / "run"), "--no-progress"])
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2 and "no intact checkpoint" in err[-1] and "step 8" in err[-1]
  assert "Traceback" not in "\n".join(err) and len(err) <= 2, err  # the step named, then the error: no wall


def test_fine_tune_a_folder_with_its_own_tokenizer(tmp_path):
  """tokenizer='init_from': a real model's folder fine-tuned through the trainer in its own ids (an npz corpus
  built with the folder's tokenizer), the frozen layers bit for bit, the config and tokenizer files carried into
  the export; a missing init_from or tokenizer.json is refused when the config is built."""
  from jaxeff.codetrans.train import build_examples
  from jaxeff.models.hf_io import load_hf, read_config
  from jaxeff.tokenizer import load_tokenizer

  base = tiny_cfg(tokenizer="bpe", bpe_vocab=300, corpora=("pydoc",), steps=2, checkpoint_every=0, eval_every=0)
  folder = train_and_evaluate(base, tmp_path / "base", progress=False).export_dir
  mc = read_config(folder)
  tok = load_tokenizer(folder, config=mc)
  pairs = [{"src": f"x = {i}", "tgt": f"int x = {i};", "src_lang": "python", "tgt_lang": "cpp"} for i in range(40)]
  build_examples(pairs, tmp_path / "pa.npz", seq_len=64, tokenizer=tok)
  ft = dataclasses.replace(
    base,
    model=mc,
    tokenizer="init_from",
    init_from=str(folder),
    corpora=(f"npz:{tmp_path / 'pa.npz'}",),
    trainable=r"^layers/1/",
    steps=3,
    seq_len=64,
  )
  res = train_and_evaluate(ft, tmp_path / "ft", progress=False)
  assert res.model_config == mc  # the folder's config, special ids included, not re-derived from a tokenizer
  _, before = load_hf(folder)
  mask = trainable_mask(before, ft.trainable)
  for t, a, b in zip(jax.tree.leaves(mask), jax.tree.leaves(before), jax.tree.leaves(res.params)):
    if t:
      assert not np.array_equal(np.asarray(a), np.asarray(b))
    else:
      assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
  assert (res.export_dir / "tokenizer.json").read_bytes() == (folder / "tokenizer.json").read_bytes()
  assert load_tokenizer(res.export_dir, config=mc).encode("int x = 3;") == tok.encode("int x = 3;")
  with pytest.raises(ValueError, match="needs init_from"):
    tiny_cfg(tokenizer="init_from")
  with pytest.raises(ValueError, match="no tokenizer.json"):
    tiny_cfg(tokenizer="init_from", init_from=str(tmp_path))


def test_frozen_layers_cost_no_backward():
  """Frozen leaves enter the loss through stop_gradient, so XLA's compiled step for a top-layer fine-tune has
  no weight gradients and no backward below the trainable layer: fewer FLOPs than the all-trainable step (a
  4-layer model, last layer trainable: forward 4 + backward 1 vs forward 4 + backward 4 layer costs), and the
  trainable leaves' gradient (so the step) equals the all-trainable step's on those leaves."""
  cfg = tiny_cfg(  # no clipping: the all-trainable step clips by the norm over every layer
    model=ModelConfig.tiny(d_model=64, n_heads=2, n_kv_heads=1, head_dim=32, d_ff=128, n_layers=4), clip_norm=0.0
  )
  mc = cfg.model
  params = init_params(mc, jax.random.key(3))
  x = np.random.RandomState(3).randint(0, mc.vocab_size, (8, 32)).astype(np.int32)
  args = (x, x, np.ones((8, 32), np.float32))

  def compiled(pattern):
    c = dataclasses.replace(cfg, trainable=pattern)
    opt = make_optimizer(c, params)
    step = jax.jit(make_train_step(c, mc, opt, trainable_mask(params, pattern)))
    flops = step.lower(params, opt.init(params), *args).compile().cost_analysis()
    flops = (flops[0] if isinstance(flops, list) else flops)["flops"]
    return flops, step(params, opt.init(params), *args)

  top, (p_top, _, m_top) = compiled(r"^layers/3/")
  full, (p_all, _, m_all) = compiled(".*")
  assert top < 0.7 * full, (top, full)
  np.testing.assert_allclose(float(m_top["loss"]), float(m_all["loss"]), rtol=1e-6)
  np.testing.assert_allclose(
    np.asarray(p_top["layers"][3]["mlp"]["down"]), np.asarray(p_all["layers"][3]["mlp"]["down"]), atol=1e-5
  )  # float noise of two compiled programs through Adam's first step (its updates are lr = 3e-3 in size)
