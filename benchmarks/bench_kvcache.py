"""KV-cache compression benchmark: memory, decode step time and quality, side by side in one run.

  python benchmarks/bench_kvcache.py            # full run (a few minutes on 2 cores)
  python benchmarks/bench_kvcache.py --quick    # smaller settings

Methods: full cache; int8 / int4 (per-token groups); CommonKV (one SVD per group of 2 layers) at 75/50/25 % of
the full cache's memory, alone, with int4 latents, and with the cross-layer merge (rho 0.2); Palu-style
(per-layer SVD, no sharing) at the same ranks; MiniCache-style pair merging. Quality is measured through the
cache (context prefilled and compressed, continuation decoded): bits per byte of held-out code on
``tiny-code`` and pass-key accuracy on ``tiny-recall``. Decode step time at 2K / 8K / 32K context for two
shapes with random weights (``bench-512``: d_model 512, 8 layers, 8 query / 2 kv heads of 64; SmolLM2-135M's: 30
layers, 9 / 3 heads): full cache vs int8 / int4 (dequantized per tile inside attention) vs CommonKV 50 % (jnp
absorbed path, XLA latent kernel, selective reconstruction of 16 tiles of 32, int4 latents). Writes
``benchmarks/results/kvcache.json``; ``--part decode`` / ``--part quality`` merge one part into it.
"""

from __future__ import annotations

import argparse
import json
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
      out["commonkv_50+select"] = (pc, CommonKV(spec, **SELECT))
      out["commonkv_50+int4"] = (pc, CommonKV(spec, bits=4))
      out["commonkv_50+merge"] = (pc, CommonKV(spec, merge=True, rho=0.2, n_recent=64))
    _, pp, pspec, _ = palu_compress(config, params, rank=r)
    out[f"palu_{int(kept * 100)}"] = (pp, CommonKV(pspec))
  out["minicache"] = (params, MiniCacheMerge.for_model(config))
  return out


def cache_bytes_per_slot(config, params, factory, context: int, follow: int) -> float:
  """Real bytes held per cache slot after prefill (+ the factory's compression), from the arrays."""
  from jaxeff.models.cache import prefill_with

  toks = jnp.zeros((1, context), jnp.int32) + 97
  _, cache = prefill_with(factory, params, toks, jnp.arange(context)[None], config=config, max_len=context + follow)
  leaves = [x for x in jax.tree.leaves(cache) if x.ndim >= 2 and x.dtype != jnp.int32]  # data, not positions
  return sum(x.size * x.dtype.itemsize for x in leaves) / (context + follow)


SELECT = dict(select_tiles=16, tile=32)  # selective reconstruction: 512 tokens' keys rebuilt per step

DECODE_SHAPES = {  # name -> ModelConfig.tiny overrides (random weights: only the shapes matter for time)
  "bench-512": dict(vocab_size=272, d_model=512, n_layers=8, n_heads=8, n_kv_heads=2, head_dim=64, d_ff=1536),
  "smollm2-135m": dict(vocab_size=49152, d_model=576, n_layers=30, n_heads=9, n_kv_heads=3, head_dim=64, d_ff=1536),
}


def _fill(cache, S: int, key):
  """Every data array of every layer random (codes random ints, scales small positive), S slots valid."""
  import dataclasses

  layers = []
  for i, e in enumerate(cache.layers):
    upd = {}
    for n, f in enumerate(dataclasses.fields(e)):
      x = getattr(e, f.name)
      if not hasattr(x, "dtype") or f.name in ("pos", "length"):
        continue
      k = jax.random.fold_in(key, 100 * i + n)
      if jnp.issubdtype(x.dtype, jnp.floating):
        v = jax.random.normal(k, x.shape, x.dtype)
        upd[f.name] = jnp.abs(v) * 0.01 + 0.01 if "scale" in f.name else v
      else:
        upd[f.name] = jax.random.randint(k, x.shape, 0, 127).astype(x.dtype)
    M = e.pos.shape[1]
    pos = jnp.broadcast_to(jnp.where(jnp.arange(M) < S, jnp.arange(M), -1), e.pos.shape)
    layers.append(e.replace(pos=pos, length=jnp.full(e.length.shape, S, jnp.int32), **upd))
  return cache.replace(layers=tuple(layers))


def decode_step_times(lengths, repeats: int, shapes=tuple(DECODE_SHAPES)) -> dict:
  """Median ms per one-token decode step (batch 1, the whole model) with each cache filled to ``S`` tokens,
  side by side in one run: the full cache, int8 / int4, and CommonKV 50 % (jnp absorbed path, XLA latent
  kernel, selective reconstruction, with int4 latents)."""
  from jaxeff.config import ModelConfig
  from jaxeff.kvcache import CommonKV, FullCache, Quantized, compress
  from jaxeff.models.decoder import forward, init_params

  out = {}
  for shape in shapes:
    cfg = ModelConfig.tiny(max_position_embeddings=max(lengths) + 64, **DECODE_SHAPES[shape])
    params = init_params(cfg, jax.random.key(0))
    _, pc, spec, _ = compress(cfg, params, group_size=2, rank=cfg.n_kv_heads * cfg.head_dim)  # 50 % memory
    rows = {
      "full": (params, FullCache.init),
      "int8": (params, Quantized(bits=8).init),
      "int4": (params, Quantized(bits=4).init),
      "commonkv_50": (pc, CommonKV(spec).init),
      "commonkv_50_kernel_xla": (pc, CommonKV(spec, kernel="xla").init),
      "commonkv_50+select": (pc, CommonKV(spec, **SELECT).init),
      "commonkv_50+int4": (pc, CommonKV(spec, bits=4).init),
      "commonkv_50+int4+select": (pc, CommonKV(spec, bits=4, **SELECT).init),
    }
    for S in lengths:
      row = {}
      for name, (p, init) in rows.items():
        cache = _fill(init(cfg, 1, S + 8), S, jax.random.key(1))
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
        del cache
      for name in row:
        row[name]["speed_vs_full"] = row["full"]["step_s"] / row[name]["step_s"]
        print(
          f"decode {shape} S={S} {name}: {row[name]['step_s'] * 1e3:.1f} ms ({row[name]['speed_vs_full']:.2f}x full)"
        )
      out.setdefault(shape, {})[S] = row
  return out


def decode_targets(decode: dict, quality: dict | None) -> list[dict]:
  """CommonKV 50 % (its fastest variant, named) and int4 each >= 1.0x the full cache's decode speed at 8K and
  32K, per shape; the tiny-recall needle accuracy of the variant next to it."""
  out = []
  for shape, by_len in decode.items():
    for S in (8192, 32768):
      row = by_len.get(S) or by_len.get(str(S))
      if row is None:
        out.append(dict(name=f"decode speed at {S}, {shape}", measured=None, target=1.0, met=False, note="not run"))
        continue
      ckv = max(
        (n for n in row if n.startswith("commonkv_50") and "int4" not in n), key=lambda n: row[n]["speed_vs_full"]
      )
      t = target(
        f"CommonKV 50 % decode speed / full cache at {S}, {shape} (fastest variant)", row[ckv]["speed_vs_full"], 1.0
      )
      t["variant"] = ckv
      if quality and ckv in quality:
        t["tiny_recall_needle_accuracy"] = quality[ckv]
        t["tiny_recall_needle_accuracy_full"] = quality.get("full")
      out.append(t)
      out.append(target(f"int4 cache decode speed / full cache at {S}, {shape}", row["int4"]["speed_vs_full"], 1.0))
  return out


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--quick", action="store_true", help="smaller contexts and fewer examples")
  ap.add_argument(
    "--part", choices=("all", "quality", "decode"), default="all", help="run one part, merged into the results file"
  )
  ap.add_argument("--lengths", type=int, nargs="+", help="decode part: context lengths (default 2048 8192 32768)")
  ap.add_argument("--repeats", type=int, default=5, help="decode part: timed steps per cache (median)")
  args = ap.parse_args(argv)
  if args.part == "decode":
    from benchmarks._common import RESULTS, merge_results

    old = RESULTS / "kvcache.json"
    quality = json.loads(old.read_text())["results"].get("needle_accuracy") if old.is_file() else None
    decode = decode_step_times(args.lengths or [2048, 8192, 32768], repeats=args.repeats)
    targets = decode_targets(decode, _mean_accuracy(quality))
    print("wrote", merge_results("kvcache", {"decode_step": decode}, targets))
    return
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
  if args.part == "quality":
    from benchmarks._common import merge_results

    print("wrote", merge_results("kvcache", results, quality_targets(results)))
    return
  results["decode_step"] = decode_step_times([2048] if args.quick else [2048, 8192, 32768], repeats=args.repeats)
  targets = quality_targets(results) + decode_targets(
    results["decode_step"], _mean_accuracy(results["needle_accuracy"])
  )
  out = write_results("kvcache", results, targets)
  print("wrote", out)


def _mean_accuracy(acc: dict | None) -> dict | None:
  """Needle accuracy per method averaged over lengths (for the decode targets' quality column)."""
  if not acc or "full" not in acc:
    return None
  return {m: float(np.mean(list(v.values()))) for m, v in acc.items() if isinstance(v, dict)}


def quality_targets(results) -> list[dict]:
  """CommonKV 50 %'s quality against the full cache on the tiny models (bits per byte, needle accuracy)."""
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
  return targets


if __name__ == "__main__":
  main()
