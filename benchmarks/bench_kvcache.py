"""KV-cache compression benchmark: memory, decode step time and quality, side by side in one run.

  python benchmarks/bench_kvcache.py            # full run (a few minutes on 2 cores)
  python benchmarks/bench_kvcache.py --quick    # smaller settings

Methods: full cache; int8 / int4 (per-token groups); CommonKV (one SVD per group of 2 layers) at 75/50/25 % of
the full cache's memory, alone, with int4 latents, and with the cross-layer merge (rho 0.2); Palu-style
(per-layer SVD, no sharing) at the same ranks; MiniCache-style pair merging. Quality is measured through the
cache (context prefilled and compressed, continuation decoded): bits per byte of held-out code on
``tiny-code`` and pass-key accuracy on ``tiny-recall``. Decode step time at 4K/8K context on a larger random
model (d_model 512, 8 layers, 8 query / 2 kv heads of 64): full cache vs latent cache (jnp path and the
XLA latent kernel). Writes ``benchmarks/results/kvcache.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks._common import target, write_results  # noqa: E402


def methods(config, params):
  """name -> (params, cache factory, kept fraction label)."""
  from jaxeff.kvcache import CommonKV, FullCache, Quantized, compress
  from jaxeff.kvcache.peers import MiniCacheMerge, palu_compress

  d_kv = config.n_kv_heads * config.head_dim
  out = {"full": (params, FullCache), "int8": (params, Quantized(bits=8)), "int4": (params, Quantized(bits=4))}
  for kept in (0.75, 0.5, 0.25):
    r = int(round(kept * 2 * d_kv))
    _, pc, spec, _ = compress(config, params, group_size=2, rank=r)
    out[f"commonkv_{int(kept * 100)}"] = (pc, CommonKV(spec))
    if kept == 0.5:
      out["commonkv_50+int4"] = (pc, CommonKV(spec, bits=4))
      out["commonkv_50+merge"] = (pc, CommonKV(spec, merge=True, rho=0.2, n_recent=64))
    _, pp, pspec, _ = palu_compress(config, params, rank=r)
    out[f"palu_{int(kept * 100)}"] = (pp, CommonKV(pspec))
  out["minicache"] = (params, MiniCacheMerge())
  return out


def cache_bytes_per_slot(config, params, factory, context: int, follow: int) -> float:
  """Real bytes held per cache slot after prefill (+ the factory's compression), from the arrays."""
  from jaxeff.models.cache import prefill_with

  toks = jnp.zeros((1, context), jnp.int32) + 97
  _, cache = prefill_with(factory, params, toks, jnp.arange(context)[None], config=config, max_len=context + follow)
  leaves = [x for x in jax.tree.leaves(cache) if x.ndim >= 2 and x.dtype != jnp.int32]  # data, not positions
  return sum(x.size * x.dtype.itemsize for x in leaves) / (context + follow)


def decode_step_times(lengths, repeats: int) -> dict:
  from jaxeff.config import ModelConfig
  from jaxeff.kvcache import FullCache, LatentCache, compress
  from jaxeff.models.decoder import forward, init_params

  cfg = ModelConfig.tiny(
    vocab_size=272,
    d_model=512,
    n_layers=8,
    n_heads=8,
    n_kv_heads=2,
    head_dim=64,
    d_ff=1536,
    max_position_embeddings=16384,
  )
  params = init_params(cfg, jax.random.key(0))
  _, pc, spec, _ = compress(cfg, params, group_size=2, rank=cfg.n_kv_heads * cfg.head_dim)  # 50 % memory
  out = {}
  for S in lengths:
    row = {}
    for name, p, cache in [
      ("full", params, FullCache.init(cfg, 1, S + 8)),
      ("commonkv_50_jnp", pc, LatentCache.init(cfg, spec, 1, S + 8)),
      ("commonkv_50_kernel_xla", pc, LatentCache.init(cfg, spec, 1, S + 8, kernel="xla")),
    ]:
      # Fill the cache with S random entries (values do not matter for timing).
      key = jax.random.key(1)
      layers = []
      for e in cache.layers:
        fields = {}
        for f in ("k", "v", "latent"):
          if hasattr(e, f):
            fields[f] = jax.random.normal(key, getattr(e, f).shape, getattr(e, f).dtype)
        pos = jnp.where(jnp.arange(e.pos.shape[1]) < S, jnp.arange(e.pos.shape[1]), -1)[None]
        layers.append(e.replace(pos=pos, length=jnp.array([S], jnp.int32), **fields))
      cache = cache.replace(layers=tuple(layers))
      step = jax.jit(lambda p_, c_, t_: forward(p_, t_, jnp.array([[S]]), c_, config=cfg, is_prefill=False)[0])
      tok = jnp.array([[97]])
      t0 = time.perf_counter()
      jax.block_until_ready(step(p, cache, tok))
      compile_s = time.perf_counter() - t0
      ts = []
      for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(step(p, cache, tok))
        ts.append(time.perf_counter() - t0)
      row[name] = {"step_s": statistics.median(ts), "compile_s": compile_s}
      print(f"decode S={S} {name}: {row[name]['step_s'] * 1e3:.2f} ms", flush=True)
    out[S] = row
  return out


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--quick", action="store_true", help="smaller contexts and fewer examples")
  args = ap.parse_args(argv)
  from jaxeff.evals.cached import cached_bits_per_byte, cached_needle_accuracy
  from jaxeff.models.embedded import load_reference_model

  ctx, score, n_seqs = (512, 32, 2) if args.quick else (1024, 64, 4)
  needle_lengths, n_needle = ([1024], 8) if args.quick else ([1024, 2048], 16)
  results = {"memory": {}, "code_bits_per_byte": {}, "needle_accuracy": {}}
  config, params, _ = load_reference_model("tiny-code", jnp.float32)
  for name, (p, factory) in methods(config, params).items():
    t0 = time.perf_counter()
    results["memory"][name] = cache_bytes_per_slot(config, p, factory, ctx, score)
    results["code_bits_per_byte"][name] = cached_bits_per_byte(
      p, config, factory, context=ctx, score=score, n_seqs=n_seqs
    )
    print(
      f"tiny-code {name}: {results['memory'][name]:.0f} B/slot, bits/byte {results['code_bits_per_byte'][name]:.4f} "
      f"({time.perf_counter() - t0:.1f} s)",
      flush=True,
    )
  full_mem = results["memory"]["full"]
  results["memory_fraction"] = {k: v / full_mem for k, v in results["memory"].items()}
  try:
    rconfig, rparams, _ = load_reference_model("tiny-recall", jnp.float32)
  except Exception as e:  # noqa: BLE001 - recorded, not hidden
    results["needle_accuracy"] = {"error": f"tiny-recall unavailable: {e}"}
  else:
    for name, (p, factory) in methods(rconfig, rparams).items():
      acc, digits = cached_needle_accuracy(p, rconfig, factory, needle_lengths, n=n_needle, return_per_digit=True)
      results["needle_accuracy"][name] = acc
      results.setdefault("needle_digit_accuracy", {})[name] = digits
      print(f"tiny-recall {name}: needle {acc}, per digit {digits}", flush=True)
  results["decode_step"] = decode_step_times([4096] if args.quick else [4096, 8192], repeats=5)

  targets = []
  bpb = results["code_bits_per_byte"]
  targets.append(
    target(
      "CommonKV at 50% KV memory: code bits/byte relative to the full cache (<= 1.02)",
      bpb["commonkv_50"] / bpb["full"],
      1.02,
      higher_is_better=False,
    )
  )
  acc = results["needle_accuracy"]
  if "full" in acc:
    gap = min(acc["commonkv_50"][L] - acc["full"][L] for L in acc["full"])
    targets.append(
      target("CommonKV at 50% KV memory: needle accuracy minus full cache (worst length, >= -0.02)", gap, -0.02)
    )
    dig = results["needle_digit_accuracy"]
    dgap = min(float(np.mean(dig["commonkv_50"][L]) - np.mean(dig["full"][L])) for L in dig["full"])
    targets.append(
      target("CommonKV at 50% KV memory: mean per-digit needle accuracy minus full cache (>= -0.02)", dgap, -0.02)
    )
  else:
    targets.append(
      {
        "name": "CommonKV at 50% KV memory: needle accuracy within 2 points",
        "measured": None,
        "target": -0.02,
        "met": False,
      }
    )
  S = max(results["decode_step"])
  d = results["decode_step"][S]
  best = min(d["commonkv_50_jnp"]["step_s"], d["commonkv_50_kernel_xla"]["step_s"])
  targets.append(
    target(
      f"latent decode step / full-cache decode step at {S} (<= 1.0)",
      best / d["full"]["step_s"],
      1.0,
      higher_is_better=False,
    )
  )
  out = write_results("kvcache", results, targets)
  print("wrote", out)


if __name__ == "__main__":
  main()
