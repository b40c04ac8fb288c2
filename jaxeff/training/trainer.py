"""The one trainer: the train step (accumulation, loss masks, sharding), evaluation and the driver
(``train_and_evaluate``: resumable orbax checkpoints, JSONL metrics, a progress bar). Its pieces live beside it:
``config`` (``TrainConfig``), ``optim`` (schedules, ``make_optimizer``), ``data`` (``build_data``), ``checkpoint``
(``Checkpointer``), ``presets`` (named configs, ``load_train_config``); their names are re-exported here.

``train_and_evaluate(config, workdir)`` runs (or resumes) a run and exports the final model in HF format.
Scaling sweeps, Judge Q soft tokens, two-stage fine-tuning and the reference models all call it (or its
pieces: ``make_optimizer``, ``make_train_step``, ``evaluate``).

Resumption is exact on CPU: a checkpoint holds params, optimizer state, step and the data iterator's state,
so a run killed at any point and restarted produces the same parameters and losses bit for bit.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxeff import sharding as shard_lib
from jaxeff.attention.dense import TrainingAttention
from jaxeff.config import ModelConfig
from jaxeff.models.decoder import forward, init_params, param_logical_axes
from jaxeff.training import data as data_lib
from jaxeff.training.checkpoint import Checkpointer as Checkpointer
from jaxeff.training.config import _DTYPES
from jaxeff.training.config import TrainConfig as TrainConfig
from jaxeff.training.config import model_config_from_dict as model_config_from_dict
from jaxeff.training.data import SYNTHETIC as SYNTHETIC
from jaxeff.training.data import RunData as RunData
from jaxeff.training.data import build_data as build_data
from jaxeff.training.optim import OptimizerConfig as OptimizerConfig
from jaxeff.training.optim import lr_schedule as lr_schedule
from jaxeff.training.optim import make_optimizer as make_optimizer
from jaxeff.training.optim import path_names as path_names
from jaxeff.training.optim import trainable_mask as trainable_mask
from jaxeff.training.presets import load_train_config as load_train_config


# ------------------------------------------------------------------------------------------------ steps
def masked_nll(params, inputs, targets, loss_mask, *, config: ModelConfig, compute_dtype=jnp.float32):
  """(sum of masked token NLL, number of counted tokens) under ``forward`` with ``TrainingAttention`` (exact
  attention whose gradient recomputes per block instead of storing [T, T] probabilities)."""
  if compute_dtype != jnp.float32:
    params = jax.tree.map(lambda p: p.astype(compute_dtype), params)
  B, T = inputs.shape
  pos = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
  logits, _ = forward(params, inputs, pos, config=config, attention=TrainingAttention())
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
  return jnp.sum(nll * loss_mask), jnp.sum(loss_mask)


def make_train_step(config: TrainConfig, model_config: ModelConfig, optimizer, trainable: Any):
  """A pure step (params, opt_state, inputs, targets, mask) -> (params, opt_state, metrics), accumulating
  gradients over ``grad_accum`` micro-batches: grad = sum_m grad(sum nll_m) / sum_m tokens_m, i.e. the
  full-batch gradient of the mean token loss."""
  dtype = _DTYPES[config.compute_dtype]
  A = config.grad_accum

  def step(params, opt_state, inputs, targets, mask):
    B, T = inputs.shape
    mb = lambda x: x.reshape(A, B // A, T)
    # Frozen leaves enter through stop_gradient: their gradients are symbolic zeros, so the backward pass skips
    # their weight gradients and every layer below the lowest trainable one (fine-tuning the top layers of a
    # model costs its forward plus the top layers' backward); grad_norm covers the trainable leaves.
    freeze = lambda p: jax.tree.map(lambda t, x: x if t else jax.lax.stop_gradient(x), trainable, p)
    grad_fn = jax.value_and_grad(
      lambda p, i, t, m: masked_nll(freeze(p), i, t, m, config=model_config, compute_dtype=dtype), has_aux=True
    )

    def micro(carry, xs):
      g_acc, nll_acc, n_acc = carry
      (nll, n), g = grad_fn(params, *xs)
      return (jax.tree.map(jnp.add, g_acc, g), nll_acc + nll, n_acc + n), None

    zeros = jax.tree.map(jnp.zeros_like, params)
    (g, nll, n), _ = jax.lax.scan(micro, (zeros, 0.0, 0.0), (mb(inputs), mb(targets), mb(mask)))
    n = jnp.maximum(n, 1.0)
    g = jax.tree.map(lambda x: x / n, g)
    updates, opt_state = optimizer.update(g, opt_state, params)
    new = optax.apply_updates(params, updates)
    # Frozen leaves are returned untouched (not p + 0, which would turn -0.0 into +0.0).
    new = jax.tree.map(lambda t, p, q: q if t else p, trainable, params, new)
    metrics = {"loss": nll / n, "tokens": n, "grad_norm": optax.tree.norm(g)}
    return new, opt_state, metrics

  return step


@functools.lru_cache(maxsize=16)
def _eval_fn(config: ModelConfig, compute_dtype: str):
  """One jitted scorer per (config, dtype), so periodic evaluations do not recompile."""
  return jax.jit(lambda p, i, t, m: masked_nll(p, i, t, m, config=config, compute_dtype=_DTYPES[compute_dtype]))


def evaluate(params, batches, *, config: ModelConfig, byte_lengths: np.ndarray | None = None, compute_dtype="float32"):
  """Mean masked NLL (nats/token) over ``batches`` and, given per-token byte lengths, bits per byte."""
  fn = _eval_fn(config, compute_dtype)
  tot, n, nbytes = 0.0, 0.0, 0.0
  for b in batches:
    s, c = fn(params, b.inputs, b.targets, b.loss_mask)
    tot += float(s)
    n += float(c)
    if byte_lengths is not None:
      nbytes += float(np.sum(byte_lengths[b.targets] * b.loss_mask))
  if n == 0:  # a loss over nothing is not 0 (perplexity 1): refuse it
    raise ValueError("evaluate: no scored tokens (zero batches, or every loss_mask is 0)")
  out = {"loss": tot / n, "tokens": n}
  if byte_lengths is not None and nbytes > 0:
    out["bits_per_byte"] = tot / math.log(2) / nbytes
  return out


# ------------------------------------------------------------------------------------------------ driver
@dataclasses.dataclass
class TrainResult:
  params: Any
  model_config: ModelConfig
  history: list[dict]
  final_eval: dict
  export_dir: Path | None
  train_seconds: float


def _global_batch(batch, sharding):
  """Place a host batch (identical on every process) as a global array sharded over the data axes."""
  if jax.process_count() == 1:
    return jax.device_put(batch, sharding)
  n, pid = jax.process_count(), jax.process_index()
  rows = batch.shape[0] // n
  return jax.make_array_from_process_local_data(sharding, batch[pid * rows : (pid + 1) * rows])


def train_and_evaluate(
  config: TrainConfig,
  workdir: str | os.PathLike,
  *,
  progress: bool = True,
  export: bool = True,
  on_checkpoint: Callable[[int], None] | None = None,
) -> TrainResult:
  """Train (or resume) ``config`` in ``workdir``; evaluate; export the final model to ``workdir/export``.

  Files: ``checkpoints/`` (orbax), ``metrics.jsonl`` (one JSON object per logged step / eval),
  ``config.json``, ``tokenizer/`` (BPE runs), ``export/`` (HF folder: config, safetensors, tokenizer).
  The workdir is locked for the run (``jaxeff.io.locked_folder``): a second run in it fails at once.
  ``on_checkpoint(step)`` is called right after each checkpoint save was started (the crash-resume test kills
  the process there; a caller may log or upload).
  """
  from jaxeff.io import locked_folder

  if config.distributed:  # every process of one multi-host run shares the workdir: one lock per process index
    shard_lib.initialize_distributed()
  name = f".jaxeff-{jax.process_index()}.lock" if config.distributed else ".jaxeff.lock"
  with locked_folder(workdir, "training", name=name):
    return _train_and_evaluate(config, workdir, progress=progress, export=export, on_checkpoint=on_checkpoint)


def _train_and_evaluate(config, workdir, *, progress, export, on_checkpoint):
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  data = build_data(config, workdir)
  model_config = (
    config.model  # the init_from folder's own config and tokenizer: its special ids stay as they are
    if config.tokenizer == "init_from"
    else config.model.replace(
      vocab_size=data.vocab_size,
      bos_token_id=data.tokenizer.bos_id,
      eos_token_id=data.tokenizer.eos_id,
      pad_token_id=getattr(data.tokenizer, "pad_id", None),
    )
  )
  mesh = shard_lib.make_mesh(config.mesh_data, config.mesh_fsdp, config.mesh_tensor)
  logical = param_logical_axes(model_config)

  with jax.set_mesh(mesh):
    abstract = jax.eval_shape(lambda: init_params(model_config, jax.random.key(config.seed)))
    p_shard = shard_lib.tree_shardings(logical, abstract, mesh)
    if config.init_from:
      from jaxeff.models.hf_io import load_hf

      init_cfg, init = load_hf(config.init_from, dtype=jnp.float32)
      shape_cfg = lambda c: (c.vocab_size, c.d_model, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.d_ff)
      if shape_cfg(init_cfg) != shape_cfg(model_config):
        raise ValueError(
          f"init_from={config.init_from} has shapes {shape_cfg(init_cfg)}, the run needs {shape_cfg(model_config)}"
        )
      params = jax.device_put(init, p_shard)
    else:
      params = jax.jit(lambda k: init_params(model_config, k), out_shardings=p_shard)(jax.random.key(config.seed))
    optimizer = make_optimizer(config, params)
    opt_state = jax.jit(optimizer.init)(params)
    trainable = trainable_mask(params, config.trainable)
    if not any(jax.tree.leaves(trainable)):
      raise ValueError(f"trainable={config.trainable!r} matches no parameter")
    ckpt = Checkpointer(workdir / "checkpoints", keep=config.keep_checkpoints)
    start = 0
    if ckpt.latest_step() is not None:
      abstract_opt = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), opt_state)
      abstract_p = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), params)
      latest, params, opt_state, data_state, saved_cfg = ckpt.restore_latest_intact(abstract_p, abstract_opt)
      for step in [s for s in ckpt.manager.all_steps() if s > latest]:  # damaged ones: kept aside, not deleted
        where = ckpt.set_aside(step)
        print(f"jaxeff: resuming from step {latest}; damaged step {step} moved to {where}", file=sys.stderr)
      if saved_cfg != json.loads(json.dumps(config.to_dict())):
        raise ValueError(f"{workdir} holds a run with a different config; use a new workdir")
      data.train.set_state(data_state)
      start = latest
    (workdir / "config.json").write_text(json.dumps(config.to_dict(), indent=2))

    batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp"), None))
    step_fn = jax.jit(make_train_step(config, model_config, optimizer, trainable), donate_argnums=(0, 1))
    history: list[dict] = []
    metrics_file = open(workdir / "metrics.jsonl", "a")
    bar = None
    if progress and jax.process_index() == 0:
      from tqdm.auto import tqdm

      bar = tqdm(total=config.steps, initial=start, desc="train", unit="step", dynamic_ncols=True)
    t0 = time.perf_counter()
    tokens_seen = 0
    try:
      for step in range(start + 1, config.steps + 1):
        batch = next(data.train)
        args = [_global_batch(x, batch_sharding) for x in (batch.inputs, batch.targets, batch.loss_mask)]
        params, opt_state, m = step_fn(params, opt_state, *args)
        tokens_seen += batch.inputs.size
        record = None
        if step % config.log_every == 0 or step == config.steps or step == start + 1:
          record = {"step": step, **{k: float(v) for k, v in m.items()}, "lr": float(lr_schedule(config)(step - 1))}
          record["tokens_per_s"] = tokens_seen / max(time.perf_counter() - t0, 1e-9)
        if config.eval_every and (step % config.eval_every == 0 or step == config.steps):
          ev = evaluate(params, data.validation_batches(), config=model_config, byte_lengths=data.byte_lengths)
          record = {**(record or {"step": step}), **{f"val_{k}": v for k, v in ev.items()}}
        if record is not None:
          history.append(record)
          if jax.process_index() == 0:
            metrics_file.write(json.dumps(record) + "\n")
            metrics_file.flush()
          if bar is not None:
            bar.set_postfix(
              {k: f"{v:.3f}" for k, v in record.items() if k in ("loss", "val_loss", "val_bits_per_byte")}
            )
        if config.checkpoint_every and (step % config.checkpoint_every == 0 or step == config.steps):
          ckpt.save(step, params, opt_state, data.train.get_state(), config)
          if on_checkpoint is not None:
            on_checkpoint(step)
        if bar is not None:
          bar.update(1)
      ckpt.wait()
    finally:
      metrics_file.close()
      if bar is not None:
        bar.close()
      ckpt.close()
    seconds = time.perf_counter() - t0
    final = evaluate(params, data.validation_batches(), config=model_config, byte_lengths=data.byte_lengths)

  export_dir = None
  if export and jax.process_index() == 0:
    from jaxeff.models.hf_io import save_hf

    export_dir = save_hf(workdir / "export", model_config, jax.device_get(params))
    tok_dir = workdir / "tokenizer"
    if config.tokenizer == "init_from":  # the folder's tokenizer files (chat template included)
      for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
        if (Path(config.init_from) / name).is_file():
          shutil.copy(Path(config.init_from) / name, export_dir / name)
    elif (tok_dir / "tokenizer.json").is_file():
      for f in tok_dir.iterdir():
        shutil.copy(f, export_dir / f.name)
    else:
      data_lib.save_byte_tokenizer(export_dir)
  return TrainResult(params, model_config, history, final, export_dir, seconds)
