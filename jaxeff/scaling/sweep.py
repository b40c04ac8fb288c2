"""Scaling sweeps on jaxeff's trainer: counters, grid and IsoFLOP designs, a resumable runner, a results table.

Every point (N, D) is its own training run whose cosine schedule ends at exactly its D tokens (losses read off
a longer run are too high at small D and bias fits), evaluated on a fixed held-out split of an evaluation
corpus. The table (CSV) gets one row per finished point, written atomically (whole file to a temporary name,
then ``os.replace``): a killed sweep loses nothing; re-running it skips finished points and a killed point
resumes from its last checkpoint (the trainer's exact resume).

**Counting** (Kaplan / Chinchilla conventions): N = non-embedding parameters, the untied output head
included (``count_params(config)``; ``embeddings=True`` adds the token embedding); training compute C = 6 N D;
``train_flops(..., attention=True)`` adds the attention matmuls, 12 * n_layers * seq_len * d_attn per token
(QK^T and AV, forward + backward, no causal halving). Fits use C = 6 N D only.

**On a TPU pod slice** one run per host or slice: give each host its share of the points
(``points[jax.process_index()::jax.process_count()]``) and its own table, then concatenate the tables;
or run each point as a multi-host job (``TrainConfig(distributed=True)``, see ``tpu_setup/``). The runner
itself is sequential: no scheduler of its own.

Example:
  >>> cfg = model_for(32, 2)
  >>> count_params(cfg), train_flops(cfg, 1000) == 6 * count_params(cfg) * 1000
  (32416, True)
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxeff.config import ModelConfig
from jaxeff.io import read_text

COLUMNS = (
  "name",
  "corpus",
  "eval_corpus",
  "d_model",
  "n_layers",
  "N",
  "N_total",
  "D",
  "C",
  "C_attention",
  "loss",
  "bits_per_byte",
  "seconds",
  "seed",
  "settings",
)


# ------------------------------------------------------------------------------------------------ counting
def count_params(config: ModelConfig, *, embeddings: bool = False) -> int:
  """Parameters for scaling laws: non-embedding with the untied head included (default), or all parameters."""
  total = config.param_count(include_embeddings=True)
  if embeddings:
    return total
  emb = config.vocab_size * config.d_model
  return total - emb if not config.tie_embeddings else total


def train_flops(config: ModelConfig, tokens: float, *, seq_len: int = 128, attention: bool = False) -> float:
  """Training FLOPs for ``tokens`` tokens: 6 N tokens (+ 12 * layers * seq_len * n_heads * head_dim per token)."""
  flops = 6.0 * count_params(config) * tokens
  if attention:
    flops += 12.0 * config.n_layers * seq_len * config.n_heads * config.head_dim * tokens
  return flops


def model_for(d_model: int, n_layers: int, *, vocab_size: int = 272, max_len: int = 512) -> ModelConfig:
  """A sweep model: byte vocabulary, heads of 16 dims (MHA), SwiGLU width 8/3 d rounded to 16, untied head."""
  if d_model < 16 or d_model % 16 or n_layers < 1:
    raise ValueError(f"d_model must be a positive multiple of 16 and n_layers >= 1, got {d_model}, {n_layers}")
  heads = d_model // 16
  return ModelConfig.tiny(
    vocab_size=vocab_size,
    d_model=d_model,
    n_layers=n_layers,
    n_heads=heads,
    n_kv_heads=heads,
    head_dim=16,
    d_ff=16 * max(1, round(8 * d_model / 3 / 16)),
    max_position_embeddings=max_len,
    tie_embeddings=False,
  )


# ------------------------------------------------------------------------------------------------ designs
@dataclasses.dataclass(frozen=True)
class SweepPoint:
  """One run: a model, its token budget D, the training mixture and the held-out evaluation corpus."""

  model: ModelConfig
  tokens: int
  corpora: tuple[str, ...] = ("python",)
  weights: tuple[float, ...] = (1.0,)
  eval_corpus: str = "python"
  seed: int = 0

  @property
  def corpus(self) -> str:
    return (
      "+".join(f"{c}:{w:g}" for c, w in zip(self.corpora, self.weights)) if len(self.corpora) > 1 else self.corpora[0]
    )

  @property
  def name(self) -> str:
    return f"{self.corpus.replace(':', '')}-d{self.model.d_model}-l{self.model.n_layers}-D{self.tokens}-s{self.seed}"


def parse_mixture(spec: str) -> tuple[tuple[str, ...], tuple[float, ...]]:
  """'python' or 'python:0.5,gcide:0.5' -> (corpora, weights)."""
  parts = [p for p in spec.split(",") if p]
  names, weights = [], []
  for p in parts:
    name, _, w = p.partition(":")
    names.append(name)
    weights.append(float(w) if w else 1.0)
  if not names:
    raise ValueError(f"empty corpus spec {spec!r}")
  return tuple(names), tuple(weights)


def grid_design(
  sizes: Sequence[tuple[int, int]],
  tokens: Sequence[int],
  *,
  corpus: str = "python",
  eval_corpus: str | None = None,
  seeds=(0,),
) -> list[SweepPoint]:
  """Every (d_model, n_layers) in ``sizes`` x every D in ``tokens`` (Hoffmann's Approach 3 grid)."""
  corpora, weights = parse_mixture(corpus)
  ev = eval_corpus or corpora[0]
  return [
    SweepPoint(model_for(d, l), int(D), corpora, weights, ev, s) for (d, l) in sizes for D in tokens for s in seeds
  ]


def isoflop_design(
  budgets: Sequence[float], sizes: Sequence[tuple[int, int]], *, corpus: str = "python", eval_corpus: str | None = None
) -> list[SweepPoint]:
  """For each compute budget C, every size with D = C / (6 N) (Approach 2's IsoFLOP profiles)."""
  corpora, weights = parse_mixture(corpus)
  ev = eval_corpus or corpora[0]
  out = []
  for C in budgets:
    for d, l in sizes:
      m = model_for(d, l)
      out.append(SweepPoint(m, int(round(C / (6 * count_params(m)))), corpora, weights, ev))
  return out


# ------------------------------------------------------------------------------------------------ table
def read_table(path: str | os.PathLike, columns: Sequence[str] = ("N", "D", "loss")) -> list[dict[str, Any]]:
  """Rows of a results table (CSV with parameter-count, token-count and loss columns; numbers parsed).

  ``columns``: the table's names for N, D and the loss (e.g. ``("params", "tokens", "val_loss")`` for a table
  written elsewhere); they are renamed to N, D and loss in the rows returned."""
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"no results table at {path}")
  columns = tuple(columns)
  if len(columns) != 3 or len(set(columns)) != 3:
    raise ValueError(f"columns must name 3 distinct columns (N, D, loss), got {columns}")
  rename = dict(zip(columns, ("N", "D", "loss")))
  with io.StringIO(read_text(path, "results table"), newline="") as f:
    reader = csv.DictReader(f)
    missing = [c for c in columns if c not in (reader.fieldnames or [])]
    if missing:
      raise ValueError(f"{path}: missing columns {missing} (have {reader.fieldnames})")
    rows = []
    for i, r in enumerate(reader):
      r = {
        rename.get(k, k) if k not in ("N", "D", "loss") or k in rename else f"{k}_original": v for k, v in r.items()
      }
      for k, v in r.items():
        try:
          r[k] = float(v) if k in ("N", "D", "C", "C_attention", "loss", "bits_per_byte", "seconds", "N_total") else v
        except (TypeError, ValueError):
          raise ValueError(f"{path}: row {i + 2} column {k!r} is not a number: {v!r}") from None
      rows.append(r)
  return rows


def table_arrays(rows: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(N, D, L) arrays from table rows, checked positive."""
  N = np.array([r["N"] for r in rows], float)
  D = np.array([r["D"] for r in rows], float)
  L = np.array([r["loss"] for r in rows], float)
  for name, x in (("N", N), ("D", D), ("loss", L)):
    bad = np.flatnonzero(~np.isfinite(x) | (x <= 0))
    if len(bad):
      raise ValueError(f"table column {name} must be > 0; bad rows {(bad + 2).tolist()}")
  return N, D, L


def _append_row(path: Path, row: dict[str, Any]) -> None:
  rows = []
  if path.is_file():
    with path.open(newline="") as f:
      rows = list(csv.DictReader(f))
  rows.append({k: row.get(k, "") for k in COLUMNS})
  buf = io.StringIO()
  w = csv.DictWriter(buf, fieldnames=COLUMNS)
  w.writeheader()
  w.writerows(rows)
  tmp = path.with_suffix(path.suffix + ".tmp")
  tmp.write_text(buf.getvalue())
  os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------ runner
def point_settings(p: SweepPoint, **training: Any) -> str:
  """A fingerprint of everything that changes a point's result: the whole model config, tokens, mixture,
  evaluation corpus, seed and the training settings (``seq_len``, ``batch_size``, ``lr``, ...). A table row is
  reused only when its fingerprint matches."""
  import hashlib
  import json

  blob = {"point": dataclasses.asdict(p), **training}  # asdict recurses into the model config
  return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_sweep(
  points: Sequence[SweepPoint],
  workdir: str | os.PathLike,
  *,
  table: str | os.PathLike | None = None,
  seq_len: int = 128,
  batch_size: int = 32,
  lr: float = 3e-3,
  eval_batches: int = 8,
  progress: bool = True,
  max_documents: int | None = None,
) -> list[dict[str, Any]]:
  """Train every point not yet in the table (``workdir/results.csv`` by default), append its row, return all rows.

  A row is reused only when its ``settings`` fingerprint (``point_settings``) matches: a point already in the
  table with other settings raises ``ValueError`` instead of returning a stale row (rows written before the
  fingerprint existed, with an empty ``settings``, are reused as before).

  Each run: steps = round(D / (batch_size * seq_len)) (the row's D is the tokens actually seen), linear warmup
  over 5 % then cosine to 10 % ending at the last step, AdamW; held-out loss and bits/byte on
  ``eval_batches`` fixed batches of the point's evaluation corpus (validation split).
  """
  from jaxeff.io import locked_folder

  workdir = Path(workdir)
  table = Path(table) if table is not None else workdir / "results.csv"
  with locked_folder(workdir, "sweep", name=f".{table.name}.lock"):  # the shards of one sweep write other tables
    return _run_sweep(points, workdir, table, seq_len, batch_size, lr, eval_batches, progress, max_documents)


def _run_sweep(points, workdir, table, seq_len, batch_size, lr, eval_batches, progress, max_documents):
  from jaxeff.training.trainer import TrainConfig, build_data, evaluate, train_and_evaluate

  names = [p.name for p in points]
  if len(set(names)) != len(names):
    raise ValueError("sweep points must be distinct (same model, tokens, mixture and seed twice)")
  training = dict(
    seq_len=seq_len, batch_size=batch_size, lr=lr, eval_batches=eval_batches, max_documents=max_documents
  )
  settings = {p.name: point_settings(p, **training) for p in points}
  done = {r["name"]: r.get("settings", "") for r in read_table(table)} if table.is_file() else {}
  stale = sorted(n for n in settings if done.get(n) and done[n] != settings[n])
  if stale:
    raise ValueError(
      f"{table}: {len(stale)} point(s) were run with other settings ({', '.join(stale[:3])}"
      f"{', ...' if len(stale) > 3 else ''}); a changed model, budget, seq_len, batch size, lr or corpus is a new "
      "experiment: use another workdir / --table, or delete those rows"
    )
  todo = [p for p in points if p.name not in done]
  bar = None
  if progress:
    from tqdm.auto import tqdm

    bar = tqdm(total=len(points), initial=len(points) - len(todo), desc="sweep", unit="run")
  for p in todo:
    steps = max(1, round(p.tokens / (batch_size * seq_len)))
    cfg = TrainConfig(
      model=p.model,
      corpora=p.corpora,
      weights=p.weights,
      seq_len=seq_len,
      batch_size=batch_size,
      steps=steps,
      lr=lr,
      warmup_steps=max(1, steps // 20),
      schedule="cosine",
      min_lr_ratio=0.1,
      eval_every=0,
      eval_batches=eval_batches,
      checkpoint_every=max(1, steps // 4),
      log_every=max(1, steps // 10),
      seed=p.seed,
      max_documents=max_documents,
    )
    t0 = time.perf_counter()
    res = train_and_evaluate(cfg, workdir / p.name, progress=False, export=False)
    ev_cfg = dataclasses.replace(cfg, corpora=(p.eval_corpus,), weights=(1.0,))
    data = build_data(ev_cfg)
    ev = evaluate(res.params, data.validation_batches(), config=res.model_config, byte_lengths=data.byte_lengths)
    D = steps * batch_size * seq_len
    N = count_params(p.model)
    _append_row(
      table,
      {
        "name": p.name,
        "corpus": p.corpus,
        "eval_corpus": p.eval_corpus,
        "d_model": p.model.d_model,
        "n_layers": p.model.n_layers,
        "N": N,
        "N_total": count_params(p.model, embeddings=True),
        "D": D,
        "C": 6.0 * N * D,
        "C_attention": train_flops(p.model, D, seq_len=seq_len, attention=True),
        "loss": ev["loss"],
        "bits_per_byte": ev.get("bits_per_byte", math.nan),
        "seconds": time.perf_counter() - t0,
        "seed": p.seed,
        "settings": settings[p.name],
      },
    )
    if bar is not None:
      bar.update(1)
  if bar is not None:
    bar.close()
  return read_table(table)
