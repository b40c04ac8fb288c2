"""Uptraining an MLA-converted model (MHA2MLA's recovery step) with the trainer's own step, optimiser and data.

``to_mla`` (``jaxeff.kvcache.mla``) drops RoPE from most frequency pairs and factorises the NoPE keys and the
values through one latent; the model then needs a short fine-tune on ordinary text to recover (MHA2MLA reports
0.3-0.6 % of the pretraining tokens). ``uptrain`` runs that fine-tune with ``make_train_step`` /
``make_optimizer`` / ``build_data`` (gradient accumulation, frozen-leaf masks, the corpora and the real model's
own tokenizer via ``tokenizer="init_from"``) on a parameter tree the trainer's HF loader cannot build, and
reports the validation loss before and after on the same held-out batches.

Reference: MHA2MLA (Ji et al., arXiv 2502.14837), Sec. 3-4.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import jax

from jaxeff.config import ModelConfig
from jaxeff.training.config import TrainConfig
from jaxeff.training.data import build_data
from jaxeff.training.optim import make_optimizer, trainable_mask
from jaxeff.training.trainer import evaluate, make_train_step


@dataclasses.dataclass
class UptrainResult:
  """``params`` after ``steps`` updates; ``history`` (per-step loss); ``val_before`` / ``val_after``: the
  validation NLL (nats/token, and bits/byte) on the same held-out batches; ``seconds`` of training."""

  params: Any
  history: list[dict]
  val_before: dict
  val_after: dict
  seconds: float


def uptrain(
  model_config: ModelConfig,
  params: Any,
  config: TrainConfig,
  *,
  workdir: str | Path | None = None,
  progress: bool = True,
) -> UptrainResult:
  """Fine-tune ``params`` (any parameter tree ``forward`` runs: an MLA- or CommonKV-converted model, or the
  original as the equal-compute control) for ``config.steps`` steps of the trainer's masked-NLL step.

  ``config`` supplies the data (``corpora``, ``seq_len``, ``batch_size``, ``grad_accum``, ``tokenizer`` —
  ``"init_from"`` with ``init_from`` the real model's folder keeps its own ids), the optimiser (``lr``,
  ``warmup_steps``, ``schedule``, ``trainable`` regex over leaf paths) and ``seed``; ``config.model`` is not used
  (``model_config`` is). Validation: ``config.eval_batches`` held-out batches of the corpora's validation split
  (disjoint from training by the corpus split).

  Example:
    >>> from jaxeff.kvcache.mla import to_mla  # doctest: +SKIP
    >>> _, pm, spec, _ = to_mla(cfg, params, pairs=8, cache_ratio=0.5)  # doctest: +SKIP
    >>> res = uptrain(cfg, pm, TrainConfig(model=cfg, tokenizer="init_from", init_from=folder,
    ...               corpora=("pydoc",), steps=100, lr=1e-4))  # doctest: +SKIP

  Reference: MHA2MLA (arXiv 2502.14837).
  """
  if config.steps < 1:
    raise ValueError(f"steps must be >= 1, got {config.steps}")
  tc = dataclasses.replace(config, model=model_config)
  data = build_data(tc, None if workdir is None else Path(workdir))
  if data.vocab_size > model_config.vocab_size:
    raise ValueError(
      f"the tokenizer's {data.vocab_size} ids do not fit the model's vocabulary {model_config.vocab_size}"
    )
  trainable = trainable_mask(params, tc.trainable)
  if not any(jax.tree.leaves(trainable)):
    raise ValueError(f"trainable={tc.trainable!r} matches no parameter")
  val = data.validation_batches()
  before = evaluate(params, val, config=model_config, byte_lengths=data.byte_lengths)
  optimizer = make_optimizer(tc, params)
  opt_state = jax.jit(optimizer.init)(params)
  step_fn = jax.jit(make_train_step(tc, model_config, optimizer, trainable))
  bar = None
  if progress:
    from tqdm.auto import tqdm

    bar = tqdm(total=tc.steps, desc="uptrain", unit="step", dynamic_ncols=True)
  history, t0 = [], time.perf_counter()
  try:
    for step in range(1, tc.steps + 1):
      b = next(data.train)
      params, opt_state, m = step_fn(params, opt_state, b.inputs, b.targets, b.loss_mask)
      if step % tc.log_every == 0 or step in (1, tc.steps):
        history.append({"step": step, "loss": float(m["loss"]), "grad_norm": float(m["grad_norm"])})
        if bar is not None:
          bar.set_postfix(loss=f"{history[-1]['loss']:.3f}")
      if bar is not None:
        bar.update(1)
  finally:
    if bar is not None:
      bar.close()
  jax.block_until_ready(params)
  seconds = time.perf_counter() - t0
  after = evaluate(params, val, config=model_config, byte_lengths=data.byte_lengths)
  return UptrainResult(params, history, before, after, seconds)


__all__ = ["UptrainResult", "uptrain"]
