"""Shared helpers for benchmark scripts: timing medians, machine description, result files."""

from __future__ import annotations

import datetime
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def median_time(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> float:
  """Median wall seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs (fn must block)."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


SETTLE_S = 0.3  # seconds between interleaved calls: PyTorch's OpenMP workers spin a while after a parallel region


def interleaved_median_times(
  fns: dict[str, Callable[[], Any]], repeats: int = 5, warmup: int = 1, settle_s: float = SETTLE_S
) -> dict[str, float]:
  """Median wall seconds of each ``fns[name]()`` (each must block), the calls interleaved round by round (one
  call of every function per round, after ``warmup`` rounds), so a machine whose speed drifts between minutes
  (this 2-core VM: up to 2x) slows every side of a ratio alike. Each call starts ``settle_s`` after the previous
  one ended: PyTorch's OpenMP workers keep spinning for a while after a parallel region, and a call started at
  once would share the cores with them."""
  for _ in range(warmup):
    for fn in fns.values():
      fn()
  times: dict[str, list[float]] = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      time.sleep(settle_s)
      t0 = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - t0)
  return {name: statistics.median(ts) for name, ts in times.items()}


def generate_timings(sampler, prompts, sampling, repeats: int = 3) -> dict[str, float]:
  """Median prefill seconds and decode ms/step of ``repeats`` identical ``generate`` calls after one compile
  call, and the bytes the prefill leaves in the cache (``Accounting.cache_bytes``)."""
  import jax

  sampler.generate(prompts, sampling, jax.random.key(0))  # compile
  runs = [sampler.generate(prompts, sampling, jax.random.key(0)).accounting for _ in range(repeats)]
  return {
    "prefill_s": statistics.median(a.prefill_s for a in runs),
    "decode_ms_per_step": 1e3 * statistics.median(a.decode_s / max(a.decode_calls, 1) for a in runs),
    "cache_bytes": runs[0].cache_bytes,
  }


def machine() -> dict[str, Any]:
  from jaxeff.tour import machine_info

  info = machine_info()
  try:
    import torch

    info["torch"] = torch.__version__
    info["torch_threads"] = torch.get_num_threads()
  except ImportError:
    pass
  return info


def provenance() -> dict[str, str]:
  """When and from which code a measurement came: ``{"measured": ISO date (UTC), "commit": short hash}``.

  The hash gets ``+dirty`` when tracked files other than ``benchmarks/results/`` (which a partial rerun itself
  rewrites) have uncommitted changes, and is ``unknown`` outside a git checkout. Rows kept across partial reruns
  carry it, so a results file that mixes runs says which code measured which row."""
  import subprocess

  root = Path(__file__).resolve().parent.parent
  try:
    git = lambda *a: subprocess.run(["git", *a], cwd=root, capture_output=True, text=True, check=True).stdout
    commit = git("rev-parse", "--short", "HEAD").strip()
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)benchmarks/results")
    commit += "+dirty" if changed.strip() else ""
  except (OSError, subprocess.CalledProcessError):
    commit = "unknown"
  return {"measured": datetime.datetime.now(datetime.UTC).date().isoformat(), "commit": commit}


def target(name: str, measured: float, goal: float, higher_is_better: bool = True) -> dict[str, Any]:
  met = measured >= goal if higher_is_better else measured <= goal
  return {"name": name, "measured": round(float(measured), 4), "target": goal, "met": bool(met)}


def write_results(area: str, results: dict[str, Any], targets: list[dict[str, Any]]) -> Path:
  RESULTS.mkdir(parents=True, exist_ok=True)
  out = RESULTS / f"{area}.json"
  payload = {
    "machine": machine(),
    "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    "results": results,
    "targets": targets,
  }
  tmp = out.with_suffix(".json.tmp")
  tmp.write_text(json.dumps(payload, indent=2) + "\n")
  os.replace(tmp, out)
  return out


def merge_results(
  area: str, results: dict[str, Any], targets: list[dict[str, Any]], drop: tuple[str, ...] = ()
) -> Path:
  """Like ``write_results`` but keeps other sections of an existing file: results are merged key by key and
  targets replaced by name (several scripts feed one area); targets named in ``drop`` (retired) are removed."""
  out = RESULTS / f"{area}.json"
  old_results, old_targets = {}, []
  if out.is_file():
    old = json.loads(out.read_text())
    old_results, old_targets = old.get("results", {}), old.get("targets", [])
  merged = dict(old_results)
  for k, v in results.items():
    merged[k] = {**merged[k], **v} if isinstance(merged.get(k), dict) and isinstance(v, dict) else v
  names = {t["name"] for t in targets} | set(drop)
  return write_results(area, merged, [t for t in old_targets if t["name"] not in names] + targets)


def save_tree(path, tree) -> None:
  """A parameter tree as one .npz (leaf paths as keys), written atomically."""
  import jax
  import numpy as np

  from jaxeff.training.optim import path_names

  names = jax.tree.leaves(path_names(tree))
  tmp = f"{path}.tmp.npz"
  np.savez(tmp, **{n: np.asarray(x) for n, x in zip(names, jax.tree.leaves(tree))})
  os.replace(tmp, path)


def load_tree(path, like):
  """The tree saved by ``save_tree`` in the structure of ``like`` (every leaf's name and shape checked)."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from jaxeff.training.optim import path_names

  names, leaves = jax.tree.leaves(path_names(like)), jax.tree.leaves(like)
  with np.load(path) as z:
    bad = [n for n, x in zip(names, leaves) if n not in z or z[n].shape != x.shape]
    if bad:
      raise ValueError(f"{path} does not match the expected tree: {', '.join(bad[:8])}")
    return jax.tree.unflatten(jax.tree.structure(like), [jnp.asarray(z[n]) for n in names])
