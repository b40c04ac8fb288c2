"""``TrainConfig``: everything a training run needs, stored beside every checkpoint, with its validation and its
(de)serialisation (``to_dict`` / ``from_dict`` / ``override``); ``model_config_from_dict``. Loading a config file
or a preset is ``jaxeff.training.presets.load_train_config``."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import jax.numpy as jnp

from jaxeff.config import ModelConfig
from jaxeff.training import data as data_lib
from jaxeff.training.data import SYNTHETIC
from jaxeff.training.optim import OptimizerConfig

_SCHEDULES = ("cosine", "wsd", "constant")
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class TrainConfig(OptimizerConfig):
  """Everything a run needs; stored beside every checkpoint. The optimiser fields (``steps``, ``lr``, ...,
  ``trainable``) are inherited from ``OptimizerConfig``.

  Attributes (grouped): model — ``model`` (a ModelConfig; its vocab is set from the tokenizer);
  data — ``corpora`` ('python', 'gcide', 'pydoc', the synthetic 'passkey' and 'arith', or the user's own
  ``text:PATH`` / ``jsonl:PATH[#FIELD]`` / ``hf:PATH[#FIELD]``: ``jaxeff.training.data.user_documents``), ``weights`` (mixture ratios), ``tokenizer`` ('byte',
  'bpe', or 'init_from': the tokenizer of the ``init_from`` folder, for fine-tuning a real model; its ids are
  the model's, ``model`` must be that folder's config), ``bpe_vocab``, ``max_documents`` (cap per corpus, for tests), ``passkey_rows`` (rows of each
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
  compute_dtype: str = "float32"
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
    if not 0 <= self.seed < 2**32:
      errors.append(f"seed must be in [0, 2**32), got {self.seed}")
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
    if self.tokenizer not in ("byte", "bpe", "init_from"):
      errors.append(f"tokenizer must be 'byte', 'bpe' or 'init_from', got {self.tokenizer!r}")
    if self.tokenizer == "init_from":
      if not self.init_from:
        errors.append("tokenizer='init_from' needs init_from (a HF folder with tokenizer.json)")
      elif not (Path(self.init_from) / "tokenizer.json").is_file():
        errors.append(f"tokenizer='init_from': {self.init_from} has no tokenizer.json")
    user = data_lib.USER_CORPUS_PREFIXES
    known = ("python", "gcide", "pydoc", *SYNTHETIC)
    bad = [c for c in self.corpora if c not in known and not c.startswith(("npz:", *user))]
    if bad:
      errors.append(
        f"unknown corpora {bad}; choose from python, gcide, pydoc, {', '.join(SYNTHETIC)}, npz:PATH or your own "
        "text:PATH / jsonl:PATH[#FIELD] / hf:PATH[#FIELD]"
      )
    missing = [c for c in self.corpora if c.startswith("npz:") and not Path(c[4:]).is_file()]
    missing += [
      c for c in self.corpora if c.startswith(user) and not Path(c.partition(":")[2].partition("#")[0]).exists()
    ]
    if missing:
      errors.append(f"corpus files not found: {missing}")
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
    """A TrainConfig from a plain mapping (a config file, a checkpoint's config.json): every field's type is
    checked first (``jaxeff.config.typed``) and all problems are reported in one ``ValueError``."""
    from jaxeff.config.typed import field_problems

    if not isinstance(d, dict):
      raise ValueError(f"invalid TrainConfig: expected a mapping of fields, got {type(d).__name__}")
    d = dict(d)
    for key in ("corpora", "weights"):
      if key in d and isinstance(d[key], str | int | float) and not isinstance(d[key], bool):
        d[key] = (d[key],)
    problems = field_problems(cls, d)
    if isinstance(d.get("model"), dict):
      problems += field_problems(ModelConfig, d["model"], "model.")
    if problems:
      raise ValueError("invalid TrainConfig: " + "; ".join(problems))
    if isinstance(d.get("model"), dict):
      d["model"] = model_config_from_dict(d["model"])
    for key in ("corpora", "weights"):
      if key in d:
        d[key] = tuple(d[key])
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
  from jaxeff.config.typed import field_problems

  problems = field_problems(ModelConfig, d)
  if problems:
    raise ValueError("invalid model config: " + "; ".join(problems))
  d = dict(d)
  if isinstance(d.get("rope_scaling"), dict):
    d["rope_scaling"] = RopeScaling(**d["rope_scaling"])
  for k in ("layer_types", "eos_token_id"):
    if isinstance(d.get(k), list):
      d[k] = tuple(d[k])
  return ModelConfig(**d)
