"""The one trainer: optax AdamW + schedule, clipping, accumulation, loss masks, trainable filters, sharding,
resumable orbax checkpoints, JSONL metrics and a progress bar.

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
import re
import shutil
import time
from collections.abc import Callable, Iterator
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

_SCHEDULES = ("cosine", "wsd", "constant")
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything a run needs; stored beside every checkpoint.

  Attributes (grouped): model — ``model`` (a ModelConfig; its vocab is set from the tokenizer);
  data — ``corpora`` ('python', 'gcide', and the synthetic 'passkey' and 'arith'), ``weights`` (mixture ratios), ``tokenizer`` ('byte' or
  'bpe'), ``bpe_vocab``, ``max_documents`` (cap per corpus, for tests), ``passkey_rows`` (rows of each
  synthetic corpus); batch —
  ``seq_len``, ``batch_size`` (global rows per step), ``grad_accum`` (micro-batches per step);
  optimisation — ``steps``, ``lr``, ``warmup_steps``, ``schedule`` ('cosine' | 'wsd' | 'constant'),
  ``min_lr_ratio``, ``decay_fraction`` (WSD's final decay share), ``weight_decay``, ``b1``, ``b2``, ``eps``,
  ``clip_norm`` (0 = off), ``compute_dtype`` ('float32' | 'bfloat16'; params stay float32),
  ``trainable`` (regex over parameter paths such as ``layers/0/attn/q``; others are frozen bit for bit);
  bookkeeping — ``seed``, ``eval_every``, ``eval_batches``, ``checkpoint_every``, ``keep_checkpoints``,
  ``log_every``; mesh — ``mesh_data``, ``mesh_fsdp``, ``mesh_tensor``; ``distributed`` calls
  ``jax.distributed.initialize()`` (multi-host TPU slices; ``jaxeff.sharding.initialize_distributed``); ``init_from`` starts from the weights of a HF
  folder (e.g. the ``export/`` of an earlier stage) instead of a random init (curricula, fine-tuning).
  """

  model: ModelConfig = dataclasses.field(default_factory=ModelConfig.tiny)
  corpora: tuple[str, ...] = ("python",)
  weights: tuple[float, ...] = (1.0,)
  tokenizer: str = "byte"
  bpe_vocab: int = 2048
  max_documents: int | None = None
  passkey_rows: int = 2048
  seq_len: int = 256
  batch_size: int = 16
  grad_accum: int = 1
  steps: int = 200
  lr: float = 3e-3
  warmup_steps: int = 20
  schedule: str = "cosine"
  min_lr_ratio: float = 0.1
  decay_fraction: float = 0.2
  weight_decay: float = 0.1
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  clip_norm: float = 1.0
  compute_dtype: str = "float32"
  trainable: str = ".*"
  seed: int = 0
  eval_every: int = 100
  eval_batches: int = 4
  checkpoint_every: int = 100
  keep_checkpoints: int = 2
  log_every: int = 10
  mesh_data: int = 1
  mesh_fsdp: int = 1
  mesh_tensor: int = 1
  distributed: bool = False
  init_from: str | None = None

  def __post_init__(self):
    errors = []
    for name in ("seq_len", "batch_size", "grad_accum", "steps", "eval_batches", "keep_checkpoints", "log_every"):
      if getattr(self, name) < 1:
        errors.append(f"{name} must be >= 1, got {getattr(self, name)}")
    for name in ("eval_every", "checkpoint_every", "warmup_steps", "passkey_rows"):
      if getattr(self, name) < 0:
        errors.append(f"{name} must be >= 0, got {getattr(self, name)}")
    if not self.lr > 0:
      errors.append(f"lr must be > 0, got {self.lr}")
    if self.weight_decay < 0 or self.clip_norm < 0:
      errors.append("weight_decay and clip_norm must be >= 0")
    if not 0 <= self.min_lr_ratio <= 1 or not 0 < self.decay_fraction <= 1:
      errors.append("min_lr_ratio must be in [0, 1] and decay_fraction in (0, 1]")
    if self.schedule not in _SCHEDULES:
      errors.append(f"schedule must be one of {_SCHEDULES}, got {self.schedule!r}")
    if self.compute_dtype not in _DTYPES:
      errors.append(f"compute_dtype must be one of {tuple(_DTYPES)}, got {self.compute_dtype!r}")
    if self.tokenizer not in ("byte", "bpe"):
      errors.append(f"tokenizer must be 'byte' or 'bpe', got {self.tokenizer!r}")
    bad = [c for c in self.corpora if c not in ("python", "gcide", *SYNTHETIC) and not c.startswith("npz:")]
    if bad:
      errors.append(f"unknown corpora {bad}; choose from python, gcide, {', '.join(SYNTHETIC)} or npz:PATH")
    missing = [c for c in self.corpora if c.startswith("npz:") and not Path(c[4:]).is_file()]
    if missing:
      errors.append(f"row files not found: {missing}")
    if len(self.weights) != len(self.corpora):
      errors.append(f"{len(self.corpora)} corpora but {len(self.weights)} weights")
    for syn in SYNTHETIC:
      if syn in self.corpora and self.tokenizer != "byte":
        errors.append(f"the {syn} corpus is byte-level: use tokenizer='byte'")
    if "passkey" in self.corpora and self.model.vocab_size < data_lib.PASSKEY_VOCAB:
      errors.append(f"the passkey corpus needs model.vocab_size >= {data_lib.PASSKEY_VOCAB} (its key symbols)")
    if self.batch_size % self.grad_accum:
      errors.append(f"batch_size {self.batch_size} is not divisible by grad_accum {self.grad_accum}")
    micro = self.batch_size // max(self.grad_accum, 1)
    shards = self.mesh_data * self.mesh_fsdp
    if shards < 1 or self.mesh_tensor < 1:
      errors.append("mesh sizes must be >= 1")
    elif micro % shards:
      errors.append(
        f"micro-batch {micro} (batch_size / grad_accum) is not divisible by the data axes "
        f"(mesh_data * mesh_fsdp = {shards})"
      )
    if self.seq_len + 1 > self.model.max_position_embeddings:
      errors.append(f"seq_len {self.seq_len} exceeds the model's max_position_embeddings")
    try:
      re.compile(self.trainable)
    except re.error as e:
      errors.append(f"trainable is not a valid regex: {e}")
    if errors:
      raise ValueError("invalid TrainConfig: " + "; ".join(errors))

  # ------------------------------------------------------------------------- (de)serialisation
  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["model"] = dataclasses.asdict(self.model)
    return d

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
    d = dict(d)
    unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
      raise ValueError(f"unknown TrainConfig keys: {', '.join(unknown)}")
    if isinstance(d.get("model"), dict):
      d["model"] = model_config_from_dict(d["model"])
    for key in ("corpora", "weights"):
      if key in d and not isinstance(d[key], tuple):
        d[key] = tuple(d[key]) if isinstance(d[key], list | tuple) else (d[key],)
    return cls(**d)

  def override(self, pairs: list[str]) -> TrainConfig:
    """Apply ``key=value`` overrides (``model.d_model=128``, ``corpora=python,gcide``); values parse as
    JSON when they can, else as strings; unknown keys fail with their name."""
    d = self.to_dict()
    for pair in pairs:
      if "=" not in pair:
        raise ValueError(f"override {pair!r} is not key=value")
      key, raw = pair.split("=", 1)
      try:
        value = json.loads(raw)
      except json.JSONDecodeError:
        value = raw.split(",") if key in ("corpora", "weights") else raw
      if key in ("corpora", "weights") and not isinstance(value, list):
        value = [value]
      if key == "weights":
        value = [float(v) for v in value]
      target = d
      parts = key.split(".")
      for p in parts[:-1]:
        if not isinstance(target.get(p), dict):
          raise ValueError(f"unknown config key {key!r}")
        target = target[p]
      if parts[-1] not in target:
        raise ValueError(f"unknown config key {key!r}")
      target[parts[-1]] = value
    return TrainConfig.from_dict(d)


def model_config_from_dict(d: dict[str, Any]) -> ModelConfig:
  """``ModelConfig`` from a dict (a run's config.json); unknown keys raise ``ValueError`` listing them."""
  from jaxeff.config import RopeScaling

  d = dict(d)
  unknown = sorted(set(d) - {f.name for f in dataclasses.fields(ModelConfig)})
  if unknown:
    raise ValueError(f"unknown model config keys: {', '.join(unknown)}")
  if isinstance(d.get("rope_scaling"), dict):
    d["rope_scaling"] = RopeScaling(**d["rope_scaling"])
  for k in ("layer_types", "eos_token_id"):
    if isinstance(d.get(k), list):
      d[k] = tuple(d[k])
  return ModelConfig(**d)


def load_train_config(path_or_preset: str, overrides: list[str] | None = None) -> TrainConfig:
  """A TrainConfig from a YAML/JSON file or ``preset:NAME`` (see ``jaxeff.training.presets``), then overrides."""
  if path_or_preset.startswith("preset:"):
    from jaxeff.training.presets import PRESETS

    name = path_or_preset.split(":", 1)[1]
    if name not in PRESETS:
      raise ValueError(f"unknown training preset {name!r}; choose one of {sorted(PRESETS)}")
    cfg = PRESETS[name]()
  else:
    path = Path(path_or_preset)
    if not path.is_file():
      raise FileNotFoundError(f"training config file not found: {path}")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
      import yaml

      raw = yaml.safe_load(text) or {}
    else:
      raw = json.loads(text)
    base = TrainConfig().to_dict()
    model = dict(base["model"])
    model.update(raw.pop("model", {}) or {})
    base.update(raw)
    base["model"] = model
    cfg = TrainConfig.from_dict(base)
  return cfg.override(overrides or [])


# ------------------------------------------------------------------------------------------------ optimiser
def lr_schedule(config: TrainConfig) -> optax.Schedule:
  """Linear warmup to ``lr``, then cosine to ``lr * min_lr_ratio``, WSD (constant, then a linear decay over
  the last ``decay_fraction`` of steps), or constant."""
  peak, floor, warm, total = config.lr, config.lr * config.min_lr_ratio, config.warmup_steps, config.steps
  warmup = optax.linear_schedule(peak / max(warm, 1), peak, max(warm, 1))
  rest = max(total - warm, 1)
  if config.schedule == "cosine":
    main = optax.cosine_decay_schedule(peak, rest, alpha=config.min_lr_ratio)
  elif config.schedule == "wsd":
    decay = max(int(round(rest * config.decay_fraction)), 1)
    main = optax.join_schedules(
      [optax.constant_schedule(peak), optax.linear_schedule(peak, floor, decay)], [rest - decay]
    )
  else:
    main = optax.constant_schedule(peak)
  return optax.join_schedules([warmup, main], [warm]) if warm > 0 else main


def path_names(tree: Any) -> Any:
  """A tree of 'a/b/0/c' strings naming every leaf."""

  def name(path, _):
    parts = []
    for k in path:
      parts.append(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))))
    return "/".join(parts)

  return jax.tree_util.tree_map_with_path(name, tree)


def trainable_mask(params: Any, pattern: str) -> Any:
  """True for leaves whose path matches ``pattern`` (``re.search``)."""
  rx = re.compile(pattern)
  return jax.tree.map(lambda n: bool(rx.search(n)), path_names(params))


def make_optimizer(config: TrainConfig, params: Any) -> optax.GradientTransformation:
  """clip -> AdamW(schedule) on trainable leaves (decay on matrices only); frozen leaves get zero updates."""
  decay_mask = jax.tree.map(lambda p: p.ndim >= 2, params)
  inner = optax.adamw(
    lr_schedule(config), b1=config.b1, b2=config.b2, eps=config.eps, weight_decay=config.weight_decay, mask=decay_mask
  )
  if config.clip_norm > 0:
    inner = optax.chain(optax.clip_by_global_norm(config.clip_norm), inner)
  labels = jax.tree.map(lambda t: "train" if t else "freeze", trainable_mask(params, config.trainable))
  return optax.multi_transform({"train": inner, "freeze": optax.set_to_zero()}, labels)


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
    grad_fn = jax.value_and_grad(
      lambda p, i, t, m: masked_nll(p, i, t, m, config=model_config, compute_dtype=dtype), has_aux=True
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
  out = {"loss": tot / max(n, 1.0), "tokens": n}
  if byte_lengths is not None and nbytes > 0:
    out["bits_per_byte"] = tot / math.log(2) / nbytes
  return out


# ------------------------------------------------------------------------------------------------ data
SYNTHETIC = ("passkey", "arith")  # byte-level synthetic corpora


@dataclasses.dataclass
class RunData:
  tokenizer: Any
  train: Iterator
  validation_batches: Callable[[], list]
  byte_lengths: np.ndarray
  vocab_size: int


def build_data(config: TrainConfig, workdir: Path | None = None) -> RunData:
  """Tokeniser, training mixture iterator and a validation-batch factory for ``config``."""
  from jaxeff.tokenizer import ByteTokenizer

  if config.tokenizer == "byte":
    tok = ByteTokenizer()
    vocab = config.model.vocab_size
    if vocab < tok.vocab_size:
      raise ValueError(f"model vocab {vocab} is smaller than the byte tokenizer's {tok.vocab_size}")
  else:
    texts = []
    for c in config.corpora:
      if c not in SYNTHETIC and not c.startswith("npz:"):
        texts += list(data_lib.load_corpus(c, "train", max_documents=config.max_documents)["text"])
    tok_dir = (workdir / "tokenizer") if workdir is not None else None
    if tok_dir is not None and (tok_dir / "tokenizer.json").is_file():
      from jaxeff.tokenizer import HFTokenizer

      tok = HFTokenizer(tok_dir / "tokenizer.json", 0, 1)
    else:
      tok = data_lib.train_bpe(texts, config.bpe_vocab, tok_dir)
    vocab = config.bpe_vocab
  eos = tok.eos_id
  L = config.seq_len

  def source(name, split, seed):
    if name.startswith("npz:"):  # pre-tokenised rows + loss masks (e.g. code-translation pairs)
      return data_lib.load_rows(name[4:], split, L)
    if name in SYNTHETIC:
      n = config.passkey_rows if split == "train" else max(config.eval_batches * config.batch_size, 8)
      seed = seed + (0 if split == "train" else 7919)
      if name == "arith":
        from jaxeff.tasks.arith import arith_rows

        return arith_rows(n, L, seed=seed, split=split, tokenizer=tok)
      filler = np.concatenate(data_lib.tokenize_corpus("python", split, tok, max_documents=config.max_documents))
      return data_lib.passkey_rows(filler, n, L, seed=seed)
    docs = data_lib.tokenize_corpus(name, split, tok, max_documents=config.max_documents)
    return data_lib.pack_documents(docs, L, eos), None

  train_sources = []
  for k, name in enumerate(config.corpora):
    rows, masks = source(name, "train", config.seed)
    train_sources.append(data_lib.PackedIterator(rows, min(config.batch_size, len(rows)), config.seed + k, masks))
  train = data_lib.MixtureIterator(train_sources, config.weights, config.batch_size, config.seed)
  val_sets = [source(name, "validation", config.seed) for name in config.corpora]

  def validation_batches():
    out = []
    for k, (rows, masks) in enumerate(val_sets):
      it = data_lib.PackedIterator(rows, min(config.batch_size, len(rows)), seed=1234 + k, loss_masks=masks)
      out += [next(it) for _ in range(config.eval_batches)]
    return out

  return RunData(tok, train, validation_batches, data_lib.token_byte_lengths(tok, vocab), vocab)


# ------------------------------------------------------------------------------------------------ checkpoints
class Checkpointer:
  """Orbax ``CheckpointManager`` for (params, opt_state, data state, config); atomic commits, restore into
  an abstract target, stale ``*.orbax-checkpoint-tmp`` directories of killed saves removed on open."""

  def __init__(self, directory: Path, keep: int = 2):
    import orbax.checkpoint as ocp

    self._ocp = ocp
    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
      for stale in directory.glob("*.orbax-checkpoint-tmp*"):
        shutil.rmtree(stale, ignore_errors=True)
    self.manager = ocp.CheckpointManager(
      directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    )

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, params, opt_state, data_state: dict, config: TrainConfig) -> None:
    ocp = self._ocp
    self.manager.save(
      step,
      args=ocp.args.Composite(
        params=ocp.args.StandardSave(params),
        opt_state=ocp.args.StandardSave(opt_state),
        data=ocp.args.JsonSave(data_state),
        config=ocp.args.JsonSave(config.to_dict()),
      ),
    )

  def restore(self, step: int, abstract_params, abstract_opt_state):
    ocp = self._ocp
    out = self.manager.restore(
      step,
      args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_params),
        opt_state=ocp.args.StandardRestore(abstract_opt_state),
        data=ocp.args.JsonRestore(),
        config=ocp.args.JsonRestore(),
      ),
    )
    return out["params"], out["opt_state"], out["data"], out["config"]

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


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
  kill_at_step: int | None = None,
) -> TrainResult:
  """Train (or resume) ``config`` in ``workdir``; evaluate; export the final model to ``workdir/export``.

  Files: ``checkpoints/`` (orbax), ``metrics.jsonl`` (one JSON object per logged step / eval),
  ``config.json``, ``tokenizer/`` (BPE runs), ``export/`` (HF folder: config, safetensors, tokenizer).
  ``kill_at_step`` (tests only) SIGKILLs the process right after that step's checkpoint save was started.
  """
  if config.distributed:
    shard_lib.initialize_distributed()
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  data = build_data(config, workdir)
  model_config = config.model.replace(
    vocab_size=data.vocab_size,
    bos_token_id=data.tokenizer.bos_id,
    eos_token_id=data.tokenizer.eos_id,
    pad_token_id=getattr(data.tokenizer, "pad_id", None),
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
    latest = ckpt.latest_step()
    if latest is not None:
      abstract_opt = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), opt_state)
      abstract_p = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), params)
      params, opt_state, data_state, saved_cfg = ckpt.restore(latest, abstract_p, abstract_opt)
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
          if kill_at_step is not None and step == kill_at_step:
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
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
    if (tok_dir / "tokenizer.json").is_file():
      for f in tok_dir.iterdir():
        shutil.copy(f, export_dir / f.name)
    else:
      data_lib.save_byte_tokenizer(export_dir)
  return TrainResult(params, model_config, history, final, export_dir, seconds)
