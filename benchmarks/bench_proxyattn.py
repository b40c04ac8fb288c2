"""ProxyAttn benchmark: speed at 8K/16K vs dense and the peers at matched density, quality on tiny-recall, and
the memory of one layer's prefill at 8K-128K.

  python benchmarks/bench_proxyattn.py                 # full: 8K and 16K, quality probe
  python benchmarks/bench_proxyattn.py --quick         # 2K only, fewer probe examples (a smoke run)
  python benchmarks/bench_proxyattn.py --part speed --lengths 65536 --repeats 1   # one long length, merged
  python benchmarks/bench_proxyattn.py --part speed --lengths 131072 --repeats 1 --methods proxy  # dense + ProxyAttn
  python benchmarks/bench_proxyattn.py --part speed --shape smollm2-135m --lengths 8192 16384 32768  # a real layer

Part 1 (speed): ``jaxeff.attention.bench.compare_attention`` on synthetic structured q/k (``--shape``: 8 query
heads, 2 kv heads, head_dim 128 by default; Llama-3.1-8B's 32 / 8 / 128 or SmolLM2-135M's 9 / 3 / 64): dense (jaxeff's blockwise flash attention in XLA) vs ProxyAttn (estimation + block-sparse
kernel, XLA path on CPU) vs XAttention vs FlexPrefill tuned to ProxyAttn's density; each row also records how
far the process's resident size rose during the timed call (``peak_rss_growth_gib``, Linux). Part 2 (quality): the
embedded ``tiny-recall`` model's needle accuracy and bits per byte on held-out stdlib code at long context with
each backend (lowered minimum budget, block 64, so that the masks are sparse at these lengths).
Part 3 (memory): XLA's memory analysis (compiled, not run) of one attention layer's whole forward for
Llama-3.1-8B's and SmolLM2-135M's shapes at 8K-128K, ProxyAttn vs dense; a log-log figure
``results/proxyattn_scaling.png`` (time and memory against context length, every backend measured). Writes
``benchmarks/results/proxyattn.json``; a ``--part`` run merges into it (speed rows by layer shape and length).
"""

from __future__ import annotations

import argparse
import json
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


SHAPES = {  # one attention layer: (q heads, kv heads, head dim)
  "llama-3.1-8b": (32, 8, 128),
  "smollm2-135m": (9, 3, 64),
}
SPEED_SHAPES = {"bench": (8, 2, 128), **SHAPES}  # the speed part's layers; "bench" (a quarter of Llama's heads)
# is the default, affordable at 128K on 2 cores; rows without a "shape" key (older runs) are "bench"


_COLORS = dict(zip(SPEED_SHAPES, ("C1", "C0", "C3"), strict=True))  # one colour per layer in both panels


def _shape(row) -> str:
  return row.get("shape", "bench")


def memory(lengths, shapes=SHAPES, block_size: int = 128) -> list[dict]:
  """XLA's memory analysis of one attention layer's whole prefill forward (ProxyAttn: estimation + mask +
  block-sparse kernel; dense: blockwise flash attention), compiled for CPU without running: temporaries beyond
  the arguments (q, k, v, positions) and the output, per length and shape, float32."""
  from jaxeff.attention import Dense, FlexPrefill, ProxyAttention, XAttention

  rows = []
  for shape, (hq, hkv, d) in shapes.items():
    for L in lengths:
      sd = jax.ShapeDtypeStruct
      args = [sd((1, L, h, d), jnp.float32) for h in (hq, hkv, hkv)] + [sd((1, L), jnp.int32)] * 2
      backends = (
        ("proxy", ProxyAttention(gamma=0.95, block_size=block_size)),
        ("proxy-assume-in-front", ProxyAttention(gamma=0.95, block_size=block_size, packing="assume_in_front")),
        ("xattention", XAttention(block_size=block_size, packing="assume_in_front")),
        ("flexprefill", FlexPrefill(block_size=block_size, packing="assume_in_front")),
        ("dense", Dense()),
      )
      for name, be in backends:
        t0 = time.perf_counter()
        compiled = jax.jit(lambda q, k, v, qp, kp, be=be: be(q, k, v, qp, kp)).lower(*args).compile()
        ma = compiled.memory_analysis()
        row = dict(
          shape=shape,
          length=L,
          method=name,
          temp_gib=ma.temp_size_in_bytes / 2**30,
          args_gib=ma.argument_size_in_bytes / 2**30,
          out_gib=ma.output_size_in_bytes / 2**30,
          compile_s=time.perf_counter() - t0,
        )
        rows.append(row)
        print(f"memory {shape} {L} {name}: temporaries {row['temp_gib']:.2f} GiB", flush=True)
  return rows


def backward_memory(length: int, shapes=SHAPES, block_size: int = 128) -> list[dict]:
  """XLA temporaries of the gradient (q, k, v) of one ProxyAttn layer's prefill (the mask is data, not
  differentiated), compiled for CPU without running."""
  from jaxeff.attention import ProxyAttention

  rows = []
  for shape, (hq, hkv, d) in shapes.items():
    sd = jax.ShapeDtypeStruct
    args = [sd((1, length, h, d), jnp.float32) for h in (hq, hkv, hkv)]
    pos = jnp.arange(length)[None]
    be = ProxyAttention(gamma=0.95, block_size=block_size, packing="assume_in_front")
    loss = lambda q, k, v: (be(q, k, v, pos, pos) ** 2).sum()
    ma = jax.jit(jax.grad(loss, (0, 1, 2))).lower(*args).compile().memory_analysis()
    rows.append(dict(shape=shape, length=length, temp_gib=ma.temp_size_in_bytes / 2**30))
    print(f"backward memory {shape} {length}: temporaries {rows[-1]['temp_gib']:.2f} GiB", flush=True)
  return rows


def plot_scaling(results, path) -> None:
  """Log-log: attention time (speed rows, every method) and XLA temporaries (memory rows) against length."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
  speed = results.get("speed") or []
  for shape in sorted({_shape(r) for r in speed}):
    color, (hq, hk, d) = _COLORS.get(shape, "C2"), SPEED_SHAPES.get(shape, ("?", "?", "?"))
    for method, style in (("dense", "--s"), ("proxy", "-o"), ("xattention", "-.v"), ("flexprefill", ":^")):
      pts = sorted((r["length"], r["time_s"]) for r in speed if r["method"] == method and _shape(r) == shape)
      if pts:
        ax_t.plot([x for x, _ in pts], [y for _, y in pts], style, color=color, label=f"{method}, {hq}/{hk}/{d}")
  ax_t.set_title("one layer's prefill attention (CPU); q / kv heads / head dim", fontsize=9)
  ax_t.set_ylabel("time (s, median; estimation included)")
  rows = results.get("memory") or []
  styles = {"proxy": "-o", "proxy-assume-in-front": ":o", "xattention": "-.v", "flexprefill": ":^", "dense": "--s"}
  for shape in sorted({r["shape"] for r in rows}):
    color = _COLORS.get(shape, "C2")
    for method, style in styles.items():
      pts = sorted((r["length"], r["temp_gib"]) for r in rows if r["shape"] == shape and r["method"] == method)
      if pts:
        ax_m.plot([x for x, _ in pts], [y for _, y in pts], style, color=color, label=f"{method}, {shape}")
  for shape in sorted({_shape(r) for r in speed}):
    color = _COLORS.get(shape, "C2")
    pts = sorted(
      (r["length"], r["peak_rss_growth_gib"])
      for r in speed
      if r["method"] == "proxy" and _shape(r) == shape and r.get("peak_rss_growth_gib")
    )
    if pts:
      ax_m.plot([x for x, _ in pts], [y for _, y in pts], "*", ms=9, color=color, label=f"proxy RSS growth, {shape}")
  ax_m.axhline(4.0, color="grey", lw=0.8)
  ax_m.set_title("one layer's prefill forward: XLA temporaries (lines), RSS growth (*)", fontsize=9)
  ax_m.set_ylabel("GiB (temporaries: beyond q / k / v / out; RSS: incl. out)")
  for ax in (ax_t, ax_m):
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("context length (tokens)")
  ax_t.legend(fontsize=7)
  ax_m.legend(fontsize=6, loc="lower right", ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def merge_speed(kept: list[dict], new: list[dict], shape: str, lengths) -> list[dict]:
  """The results file's speed rows after a ``--part speed`` run of ``shape`` at ``lengths``: each (length,
  method) the run measured replaces its old row; a method the run left out (``--methods``) keeps its old row,
  marked ``earlier_run`` (its speedup is against that run's dense call); other shapes and lengths are kept."""
  ran = {(r["length"], r["method"]) for r in new}
  out = []
  for r in kept:
    if _shape(r) == shape and r["length"] in lengths:
      if (r["length"], r["method"]) in ran:
        continue
      r = {**r, "earlier_run": True}
    out.append(r)
  return out + new


def speed_targets(speed) -> list[dict]:
  """Raw speedup against 0.8 / density and the estimation share, per measured (layer shape, length); the
  issue's long lengths (64K, 128K) stay listed, not met, for every shape until measured. Targets of the
  default ``bench`` layer keep their historical names; the others name their shape."""
  out = []
  for shape in SPEED_SHAPES:
    measured = {r["length"] for r in speed if _shape(r) == shape}
    hq, hk, d = SPEED_SHAPES[shape]
    tag = "" if shape == "bench" else f", {shape} layer ({hq} q / {hk} kv heads, d {d})"
    for L in sorted(measured | {65536, 131072}):
      name_s = f"ProxyAttn attention speedup vs dense at {L}{tag} (incl. estimation; raw, target 0.8 / density)"
      name_e = f"ProxyAttn estimation time / dense attention time at {L}{tag}"
      p = next((r for r in speed if r["length"] == L and r["method"] == "proxy" and _shape(r) == shape), None)
      goal_e = 0.10 if L < 65536 else 0.05
      if p is None:
        why = "not run (--lengths / --shape; a dense call at this length and shape takes too long on 2 cores)"
        out += [
          dict(name=name_s, measured=None, target="0.8 / density", met=False, note=why),
          dict(name=name_e, measured=None, target=goal_e, met=False, note=why),
        ]
        continue
      t = target(name_s, p["speedup"], round(0.8 / p["density"], 4))
      out += [
        {**t, "density": round(p["density"], 4)},
        target(name_e, p["estimate_share"], goal_e, higher_is_better=False),
      ]
      if L == 131072 and p.get("peak_rss_growth_gib") is not None:
        beyond = p["peak_rss_growth_gib"] - L * hq * d * 4 / 2**30  # the output (float32, batch 1) is not counted
        name_m = f"ProxyAttn forward peak RSS growth beyond its output at {L}{tag} (GiB, measured while timed)"
        out.append(target(name_m, beyond, 4.0, higher_is_better=False))
  return out


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--quick", action="store_true", help="2K tokens, fewer probe examples")
  ap.add_argument("--repeats", type=int, default=3, help="timed calls per method (medians)")
  ap.add_argument(
    "--long", action="store_true", help="speed part also at 64K and 128K (a dense call at 128K takes minutes here)"
  )
  ap.add_argument(
    "--lengths", type=int, nargs="+", help="speed part: these lengths only (default 8192 16384; --long adds more)"
  )
  ap.add_argument(
    "--methods",
    nargs="+",
    choices=("dense", "proxy", "xattention", "flexprefill"),
    default=None,
    help="speed part: these methods only (dense, proxy, xattention, flexprefill; default: all). Dense is always "
    "run: every speedup is measured against it in the same run",
  )
  ap.add_argument(
    "--shape",
    choices=tuple(SPEED_SHAPES),
    default="bench",
    help="speed part: the attention layer timed: bench (8 q / 2 kv heads, d 128; default), llama-3.1-8b "
    "(32 / 8, d 128) or smollm2-135m (9 / 3, d 64)",
  )
  ap.add_argument(
    "--part",
    choices=("all", "speed", "quality", "memory"),
    default="all",
    help="run one part, merged into the results file",
  )
  args = ap.parse_args(argv)
  from benchmarks._common import merge_results, provenance
  from jaxeff.attention.bench import compare_attention

  prov = provenance()  # the code as it was when the run started

  targets, results = [], {}
  if args.part in ("all", "speed"):
    lengths = args.lengths or ([2048] if args.quick else [8192, 16384] + ([65536, 131072] if args.long else []))
    methods = None if args.methods is None else ["dense", *(m for m in args.methods if m != "dense")]
    hq, hk, d = SPEED_SHAPES[args.shape]
    speed = compare_attention(
      lengths,
      q_heads=hq,
      kv_heads=hk,
      head_dim=d,
      min_budget_tokens=512 if args.quick else 2048,
      repeats=args.repeats,
      **({} if methods is None else {"methods": methods}),
    )
    speed = [{**r, "shape": args.shape, **prov} for r in speed]
    if args.part == "speed":  # keep the other (shape, length) rows of the results file
      from benchmarks._common import RESULTS

      old = RESULTS / "proxyattn.json"
      kept = json.loads(old.read_text())["results"].get("speed", []) if old.is_file() else []
      speed = merge_speed(kept, speed, args.shape, lengths)
    results["speed"] = speed
    if not args.quick:
      targets += speed_targets(speed)
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
  if args.part in ("all", "memory"):
    m_lengths = [2048, 8192] if args.quick else [8192, 16384, 32768, 65536, 131072]
    mem = memory(m_lengths)
    results["memory"] = mem
    for shape in SHAPES:
      for method in ("proxy", "proxy-assume-in-front"):
        p = next(r for r in mem if r["shape"] == shape and r["method"] == method and r["length"] == max(m_lengths))
        how = "default packing='auto'" if method == "proxy" else "packing='assume_in_front'"
        name = f"ProxyAttn forward temporaries beyond q/k/v/o at {max(m_lengths)} tokens, {shape} layer, {how} (GiB)"
        targets.append(target(name, p["temp_gib"], 4.0, higher_is_better=False))
    bl = 4096 if args.quick else 16384
    results["backward_memory"] = backward_memory(bl)
    for row in results["backward_memory"]:
      name = f"ProxyAttn backward (grad of q, k, v) temporaries at {bl} tokens, {row['shape']} layer (GiB)"
      targets.append(target(name, row["temp_gib"], 4.0, higher_is_better=False))
  out = (write_results if args.part == "all" else merge_results)("proxyattn", results, targets)
  plot_scaling(json.loads(out.read_text())["results"], out.parent / "proxyattn_scaling.png")
  print("wrote", out, "and", out.parent / "proxyattn_scaling.png")


if __name__ == "__main__":
  main()
