"""ProxyAttn benchmark: speed at 8K/16K vs dense and the peers at matched density, and quality on tiny-recall.

  python benchmarks/bench_proxyattn.py                 # full: 8K and 16K, quality probe
  python benchmarks/bench_proxyattn.py --quick         # 2K only, fewer probe examples (a smoke run)

Part 1 (speed): ``jaxeff.attention.bench.compare_attention`` on synthetic structured q/k (8 query heads, 2 kv
heads, head_dim 128): dense (jaxeff's blockwise flash attention in XLA) vs ProxyAttn (estimation + block-sparse
kernel, XLA path on CPU) vs XAttention vs FlexPrefill tuned to ProxyAttn's density. Part 2 (quality): the
embedded ``tiny-recall`` model's needle accuracy and bits per byte on held-out stdlib code at long context with
each backend (lowered minimum budget, block 64, so that the masks are sparse at these lengths).
Writes ``benchmarks/results/proxyattn.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks._common import target, write_results  # noqa: E402


def code_bits_per_byte(params, config, attention, seq_len: int, n_seqs: int) -> float:
  """Bits per byte of held-out stdlib code (byte model) at ``seq_len`` tokens with a prefill backend."""
  from jaxeff.models.decoder import forward
  from jaxeff.tokenizer import ByteTokenizer
  from jaxeff.training import data as data_lib

  stream = np.concatenate(data_lib.tokenize_corpus("python", "validation", ByteTokenizer()))
  rows = np.stack([stream[i * (seq_len + 1) : (i + 1) * (seq_len + 1)] for i in range(n_seqs)]).astype(np.int32)
  pos = jnp.broadcast_to(jnp.arange(seq_len), (1, seq_len))

  @jax.jit
  def nll(p, x, y):
    logits, _ = forward(p, x, pos, config=config, attention=attention)
    lp = jax.nn.log_softmax(logits, -1)
    return -jnp.take_along_axis(lp, y[..., None], -1).sum()

  tot = sum(float(nll(params, jnp.asarray(r[None, :-1]), jnp.asarray(r[None, 1:]))) for r in rows)
  return tot / np.log(2) / (n_seqs * seq_len)


def quality(lengths, n_needle: int, n_ppl: int, block_size: int, min_budget: int) -> dict:
  from jaxeff.attention import Dense, FlexPrefill, ProxyAttention, XAttention
  from jaxeff.models.embedded import load_reference_model
  from jaxeff.training.probes import needle_accuracy

  config, params, _ = load_reference_model("tiny-recall")
  backends = {
    "dense": Dense(),
    "proxy_g0.95": ProxyAttention(gamma=0.95, block_size=block_size, min_budget_tokens=min_budget),
    "proxy_g0.90": ProxyAttention(gamma=0.90, block_size=block_size, min_budget_tokens=min_budget),
    "proxy_g0.95_2proxies": ProxyAttention(
      gamma=0.95, block_size=block_size, min_budget_tokens=min_budget, num_proxies=2
    ),
    "xattention_t0.9": XAttention(block_size=block_size, threshold=0.9),
    "flexprefill_g0.9": FlexPrefill(block_size=block_size, gamma=0.9),
  }
  out = {}
  for name, att in backends.items():
    t0 = time.perf_counter()
    acc, digits = needle_accuracy(params, config, lengths, n=n_needle, attention=att, return_per_digit=True)
    bpb = code_bits_per_byte(params, config, att, max(lengths), n_ppl)
    out[name] = {
      "needle_accuracy": acc,
      "needle_digit_accuracy": digits,
      "code_bits_per_byte": bpb,
      "seconds": time.perf_counter() - t0,
    }
    print(f"quality {name}: needle {acc}, per digit {digits}, code bits/byte {bpb:.4f}", flush=True)
  return out


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--quick", action="store_true", help="2K tokens, fewer probe examples")
  ap.add_argument("--repeats", type=int, default=3, help="timed calls per method (medians)")
  ap.add_argument(
    "--part", choices=("all", "speed", "quality"), default="all", help="run one part, merged into the results file"
  )
  args = ap.parse_args(argv)
  from benchmarks._common import merge_results
  from jaxeff.attention.bench import compare_attention

  targets, results = [], {}
  if args.part in ("all", "speed"):
    lengths = [2048] if args.quick else [8192, 16384]
    speed = compare_attention(lengths, min_budget_tokens=512 if args.quick else 2048, repeats=args.repeats)
    results["speed"] = speed
    for L in lengths:
      p = next(r for r in speed if r["length"] == L and r["method"] == "proxy")
      name = f"ProxyAttn attention speedup vs dense at {L} (incl. estimation) / (0.6 / density)"
      targets.append(target(name, p["speedup"] * p["density"] / 0.6, 1.0))
      name = f"ProxyAttn estimation time / dense attention time at {L}"
      targets.append(target(name, p["estimate_share"], 0.10, higher_is_better=False))
  if args.part in ("all", "quality"):
    q_lengths = [1024, 2048] if args.quick else [1024, 2048, 4096]
    qual = quality(
      q_lengths, n_needle=8 if args.quick else 40, n_ppl=1 if args.quick else 4, block_size=64, min_budget=256
    )
    results["quality"], results["quality_lengths"] = qual, q_lengths
    dense_acc, proxy_acc = qual["dense"]["needle_accuracy"], qual["proxy_g0.95"]["needle_accuracy"]
    gap = min(proxy_acc[L] - dense_acc[L] for L in dense_acc)
    targets.append(target("tiny-recall needle accuracy, ProxyAttn gamma 0.95 minus dense (worst length)", gap, -0.01))
    dd, pd = qual["dense"]["needle_digit_accuracy"], qual["proxy_g0.95"]["needle_digit_accuracy"]
    dgap = min(float(np.mean(pd[L]) - np.mean(dd[L])) for L in dd)
    name = "tiny-recall mean per-digit accuracy, ProxyAttn gamma 0.95 minus dense (worst length)"
    targets.append(target(name, dgap, -0.01))
  out = (write_results if args.part == "all" else merge_results)("proxyattn", results, targets)
  print("wrote", out)


if __name__ == "__main__":
  main()
