"""Optimisers: the learning-rate schedules, trainable-leaf filters and ``make_optimizer`` (clip -> AdamW on the
trainable leaves; frozen leaves get zero updates). ``OptimizerConfig`` holds just the optimiser fields, for
callers that train a few leaves without a whole ``TrainConfig`` (Judge Q's soft tokens)."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import jax
import optax


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """The optimiser fields of ``TrainConfig`` (same names and defaults, see there); ``make_optimizer`` takes
  either.

  Example:
    >>> OptimizerConfig(lr=1e-2, schedule="constant", warmup_steps=0).lr
    0.01
  """

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
  trainable: str = ".*"


def lr_schedule(config) -> optax.Schedule:
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


def make_optimizer(config, params: Any) -> optax.GradientTransformation:
  """clip -> AdamW(schedule) on trainable leaves (decay on matrices only); frozen leaves get zero updates."""
  decay_mask = jax.tree.map(lambda p: p.ndim >= 2, params)
  inner = optax.adamw(
    lr_schedule(config), b1=config.b1, b2=config.b2, eps=config.eps, weight_decay=config.weight_decay, mask=decay_mask
  )
  if config.clip_norm > 0:
    inner = optax.chain(optax.clip_by_global_norm(config.clip_norm), inner)
  labels = jax.tree.map(lambda t: "train" if t else "freeze", trainable_mask(params, config.trainable))
  return optax.multi_transform({"train": inner, "freeze": optax.set_to_zero()}, labels)
