"""Side-by-side prefill attention comparison: dense vs ProxyAttn vs XAttention vs FlexPrefill at matched density.

Used by ``jaxeff bench attention`` and ``benchmarks/bench_proxyattn.py``. Inputs are ``structured_qk`` (a sink,
needles shared across heads, locality, per-head sharpness) with random values. Times are medians over
``repeats`` rounds after an ahead-of-time compile (compile time reported separately), with
``jax.block_until_ready``; within a round dense, each method's estimation and each method's attention run in
turn (interleaved), so a drifting machine slows every side of a speedup alike.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxeff.attention import peers
from jaxeff.attention.block_sparse import BlockSparseBackend
from jaxeff.attention.dense import Dense
from jaxeff.attention.proxy import ProxyAttention

METHODS = ("dense", "proxy", "xattention", "flexprefill")


def _t(x):
  return x.transpose(0, 2, 1, 3)


def _rss_gib() -> tuple[float, float] | None:
  """``(resident now, peak resident since the last reset)`` of this process in GiB, from ``/proc/self/status``
  (``VmRSS``, ``VmHWM``); ``None`` where that file does not exist (not Linux)."""
  try:
    with open("/proc/self/status") as f:
      kb = {k: int(v.split()[0]) for k, v in (ln.split(":", 1) for ln in f) if k in ("VmRSS", "VmHWM")}
  except OSError:
    return None
  return kb["VmRSS"] / 2**20, kb["VmHWM"] / 2**20


def _reset_peak_rss() -> bool:
  """Set this process's peak resident size (``VmHWM``) back to its current size (Linux >= 4.0: ``5`` written to
  ``/proc/self/clear_refs``); ``False`` where that is not possible."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
  except OSError:
    return False
  return True


def _timed_interleaved(
  calls: dict[str, tuple[Callable, tuple]], repeats: int = 3, log: Callable[[str], None] | None = None
) -> dict[str, tuple[float, float, Any, float | None]]:
  """``{name: (median seconds, compile seconds, output, peak RSS growth GiB)}`` of jitted ``fn(*args)`` per
  ``calls[name]``.

  Each function is compiled ahead of time (``lower(...).compile()``, timed apart), then called once per round
  for ``repeats`` rounds, the functions interleaved within a round: a machine whose speed drifts over minutes
  (a shared 2-core VM drifts up to 2.7x) then slows every side of a ratio alike instead of whichever function
  happened to run in the slow minutes. ``log`` (if given) gets one line per compile and per call (progress: a
  call takes minutes at 128K on 2 cores).

  Peak RSS growth: before each call the process's peak resident size is reset to its current size (Linux), and
  after it the peak minus the size before the call is kept; the largest over rounds is reported (``None`` where
  ``/proc`` cannot do this). It counts what the call itself allocated (XLA's temporaries and its output) and not
  its arguments, which were resident before; memory the allocator kept from an earlier call and reused is not
  counted again, so it is a lower bound next to XLA's compiled temporaries (an upper bound of the plan)."""
  compiled, compile_s = {}, {}
  for name, (fn, args) in calls.items():
    t0 = time.perf_counter()
    compiled[name] = jax.jit(fn).lower(*args).compile()
    compile_s[name] = time.perf_counter() - t0
    if log is not None:
      log(f"  compiled {name} in {compile_s[name]:.1f} s")
  times: dict[str, list[float]] = {name: [] for name in calls}
  grew: dict[str, float | None] = {name: None for name in calls}
  outs: dict[str, Any] = {}
  for _ in range(repeats):
    for name, (_, args) in calls.items():
      outs.pop(name, None)  # the previous round's output is freed before the call, not counted as resident
      before = _rss_gib() if _reset_peak_rss() else None
      t0 = time.perf_counter()
      outs[name] = jax.block_until_ready(compiled[name](*args))
      times[name].append(time.perf_counter() - t0)
      after = _rss_gib() if before is not None else None
      if after is not None:
        grew[name] = max(grew[name] or 0.0, after[1] - before[0])
      if log is not None:
        peak = "" if grew[name] is None else f", peak RSS +{grew[name]:.2f} GiB"
        log(f"  round {len(times[name])}/{repeats}: {name} {times[name][-1]:.2f} s{peak}")
  return {name: (statistics.median(times[name]), compile_s[name], outs[name], grew[name]) for name in calls}


def _density(mask, lengths, bs) -> float:
  return float(mask.density(lengths)) if hasattr(mask, "density") else float("nan")


def _union_density(mask, lengths, kv_heads: int) -> float:
  return float(mask.union_density(kv_heads, lengths)) if hasattr(mask, "union_density") else float("nan")


def _match(make: Callable[[float], BlockSparseBackend], q, k, lengths, target: float, lo: float, hi: float, iters=7):
  """Bisect a backend's threshold so its density is closest to ``target`` (density grows with the knob)."""
  best = None
  for _ in range(iters):
    mid = 0.5 * (lo + hi)
    backend = make(mid)
    dens = float(jax.jit(backend.mask)(q, k, lengths).density(lengths))
    if best is None or abs(dens - target) < abs(best[1] - target):
      best = (mid, dens)
    if dens < target:
      lo = mid
    else:
      hi = mid
  return make(best[0]), best[0]


def compare_attention(
  lengths: Sequence[int] = (8192, 16384),
  *,
  batch: int = 1,
  q_heads: int = 8,
  kv_heads: int = 2,
  head_dim: int = 128,
  gamma: float = 0.95,
  block_size: int = 128,
  stride: int = 4,
  num_proxies: int = 1,
  min_budget_tokens: int = 2048,
  methods: Sequence[str] = METHODS,
  match_density: bool = True,
  repeats: int = 3,
  seed: int = 0,
  recall_query_blocks: int | None = 64,
  log: Callable[[str], None] = print,
) -> list[dict]:
  """One row per (length, method): time, compile time, speedup vs dense, density, the density of the kv
  groups' union lists (what the grouped XLA path's union walk does: ``ideal_speedup_grouped = 1 / union_density``;
  nested lists, as ProxyAttn's, take the ranked walk, bounded by ``ideal_speedup``),
  attention-mass recall, output relative error vs dense; for ProxyAttn also the estimation time, its share of dense attention time
  and the analytic share ``g / (Hq s^2) + 2 bs / L``. Peers are tuned (bisection on their threshold) to
  ProxyAttn's density when ``match_density``. The recall is scored on at most ``recall_query_blocks`` evenly
  spaced query blocks (``peers.attention_mass_recall(query_blocks=...)``; exact where a length has fewer blocks,
  or with ``None``): the exact map costs about one dense call, a third of a run at 128K. Each row records the
  number scored (``recall_query_blocks``), and ``peak_rss_growth_gib``: how far the process's resident size
  rose above its size before the timed call (the largest over rounds; for the sparse methods the whole forward,
  estimation included; ``None`` off Linux), measured next to XLA's compiled temporaries.

  Example:
    >>> rows = compare_attention([1024], head_dim=64, min_budget_tokens=256, repeats=1, log=lambda s: None)
    >>> sorted({r["method"] for r in rows})
    ['dense', 'flexprefill', 'proxy', 'xattention']
  """
  bad = [m for m in methods if m not in METHODS]
  if bad:
    raise ValueError(f"unknown methods {bad}; choose from {METHODS}")
  if q_heads % kv_heads:
    raise ValueError(f"q_heads ({q_heads}) must be a multiple of kv_heads ({kv_heads}) (grouped-query attention)")
  rows = []
  for L in lengths:
    key = jax.random.key(seed + L)
    q, k = peers.structured_qk(key, batch=batch, q_heads=q_heads, kv_heads=kv_heads, length=L, head_dim=head_dim)
    v = jax.random.normal(jax.random.fold_in(key, 1), k.shape, jnp.float32)
    lens = jnp.full((batch,), L, jnp.int32)
    pos = jnp.broadcast_to(jnp.arange(L), (batch, L))
    dense_fn = lambda q_, k_, v_, p=pos: _t(Dense()(_t(q_), _t(k_), _t(v_), p, p))
    proxy = ProxyAttention(
      gamma=gamma, block_size=block_size, stride=stride, num_proxies=num_proxies, min_budget_tokens=min_budget_tokens
    )
    target = None
    backends: dict[str, tuple[BlockSparseBackend, dict]] = {}
    if "proxy" in methods or match_density:
      target = _density(jax.jit(proxy.mask)(q, k, lens), lens, block_size)
      backends["proxy"] = (proxy, {"gamma": gamma})
    if "xattention" in methods:
      make = lambda thr: peers.XAttention(block_size=block_size, stride=8, threshold=thr)
      if match_density and target is not None:
        xb, thr = _match(make, q, k, lens, target, 0.05, 1.0)
      else:
        xb, thr = make(0.9), 0.9
      backends["xattention"] = (xb, {"threshold": thr})
    if "flexprefill" in methods:
      make = lambda g: peers.FlexPrefill(block_size=block_size, gamma=g)
      if match_density and target is not None:
        fb, g = _match(make, q, k, lens, target, 0.05, 1.0)
      else:
        fb, g = make(0.9), 0.9
      backends["flexprefill"] = (fb, {"gamma": g})
    sparse = [name for name in methods if name != "dense"]
    calls = {"dense": (dense_fn, (q, k, v))}
    for name in sparse:
      backend = backends[name][0]
      calls[f"{name}/estimate"] = (backend.mask, (q, k, lens))
      calls[name] = (lambda q_, k_, v_, b=backend, n=lens: b.attend(q_, k_, v_, n), (q, k, v))
    timed = _timed_interleaved(calls, repeats=repeats, log=log if L >= 32768 else None)
    dense_s, dense_c, ref, dense_rss = timed["dense"]
    rows.append(
      dict(
        length=L,
        method="dense",
        time_s=dense_s,
        compile_s=dense_c,
        speedup=1.0,
        density=1.0,
        recall=1.0,
        rel_error=0.0,
        peak_rss_growth_gib=dense_rss,
      )
    )
    log(f"L={L} dense: {dense_s * 1e3:.0f} ms (compile {dense_c:.1f} s)")
    nrm = float(jnp.linalg.norm(ref))
    for name in sparse:
      knobs = backends[name][1]
      est_s, _, mask, _ = timed[f"{name}/estimate"]
      run_s, run_c, (out, _), run_rss = timed[name]
      dens = _density(mask, lens, block_size)
      row = dict(
        length=L,
        method=name,
        time_s=run_s,
        compile_s=run_c,
        speedup=dense_s / run_s,
        ideal_speedup=1.0 / dens,
        density=dens,
        union_density=(ud := _union_density(mask, lens, kv_heads)),
        ideal_speedup_grouped=1.0 / ud,
        recall=float(peers.attention_mass_recall(q, k, mask.block_mask, block_size, query_blocks=recall_query_blocks)),
        recall_query_blocks=min(nb := -(-L // block_size), recall_query_blocks or nb),
        rel_error=float(jnp.linalg.norm(out - ref)) / nrm,
        estimate_s=est_s,
        estimate_share=est_s / dense_s,
        peak_rss_growth_gib=run_rss,
        **knobs,
      )
      if name == "proxy":
        row["estimate_share_analytic"] = num_proxies / (q_heads * stride**2) + 2 * block_size / L
        row["budget_blocks_min_max"] = [int(mask.budget_blocks.min()), int(mask.budget_blocks.max())]
      rows.append(row)
      log(
        f"L={L} {name}: {run_s * 1e3:.0f} ms, x{row['speedup']:.2f} vs dense (ideal x{row['ideal_speedup']:.2f}), "
        f"density {dens:.3f}, recall {row['recall']:.3f}, rel err {row['rel_error']:.3g}, "
        f"estimate {est_s * 1e3:.0f} ms ({100 * row['estimate_share']:.1f}% of dense)"
      )
  return rows
