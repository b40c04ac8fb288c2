"""KV eviction benchmark: every press side by side at 5/10/20/50 % budgets, in one run.

  python benchmarks/bench_eviction.py            # full run (tens of minutes on 2 cores)
  python benchmarks/bench_eviction.py --quick    # fewer examples, no results file

Quality is measured through the compressed cache (kvpress's setting: the context is prefilled and compressed
without the question, then the question and answer are decoded through the cache with teacher forcing):

* ``tiny-recall``: pass-key accuracy at 2048 tokens (exact 5-digit match and per-digit), per press and budget.
* ``tiny-code``: bits per byte of 64 held-out code tokens after a 1024-token compressed context.
* decode step time and cache bytes vs the full cache (2048-token prompt, 32 new tokens).

Judge Q's soft tokens are trained first on data each model generates itself (``tiny-recall``: pass-key prompts
cut after the question and stdlib code windows of 512 tokens, 5-token greedy responses; ``tiny-code``: code
windows, 16-token greedy responses); the training times are reported. Writes ``benchmarks/results/eviction.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402

from benchmarks._common import generate_timings, target, write_results  # noqa: E402

SCORERS = ["judgeq", "snapkv", "pyramidkv", "h2o", "streaming", "recent", "random"]
BUDGETS = [0.05, 0.1, 0.2, 0.5]


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--quick", action="store_true", help="fewer examples and steps, no results file")
  ap.add_argument(
    "--lengths", type=int, nargs="+", default=[2048, 4096], help="needle context lengths (default: %(default)s)"
  )
  ap.add_argument("--n", type=int, default=40, help="needle examples per point (default: %(default)s)")
  ap.add_argument("--soft-tokens", type=int, default=32, help="Judge Q soft tokens (default: %(default)s)")
  ap.add_argument("--steps", type=int, default=150, help="Judge Q training steps (default: %(default)s)")
  args = ap.parse_args(argv)
  if args.quick:
    args.n, args.steps = 8, 20

  from jaxeff.evals.cached import cached_bits_per_byte, cached_needle_accuracy
  from jaxeff.generation import Sampler, SamplingParams
  from jaxeff.kvcache import FullCache
  from jaxeff.kvcache.eviction import Press
  from jaxeff.kvcache.judgeq import JudgeQPress
  from jaxeff.models.embedded import load_reference_model
  from jaxeff.training.judgeq import JudgeQConfig, make_training_data, train_judgeq

  cfg, params, _ = load_reference_model("tiny-recall")
  t0 = time.perf_counter()
  prompts, responses = make_training_data(params, cfg, n_examples=64, prompt_len=512, response_len=5, seed=0)
  t_data = time.perf_counter() - t0
  t0 = time.perf_counter()
  soft, hist, _ = train_judgeq(
    params, cfg, prompts, responses, JudgeQConfig(n_soft=args.soft_tokens, steps=args.steps, batch_size=8, lr=1e-2)
  )
  t_train = time.perf_counter() - t0
  print(f"Judge Q: data {t_data:.0f} s, training {t_train:.0f} s, loss {hist[0]:.3g} -> {hist[-1]:.3g}")

  def press(name, budget, soft_tokens=None, **kw):
    if name == "full":
      return FullCache
    if name == "judgeq":
      return JudgeQPress(soft_tokens or soft, budget=budget, **kw)
    return Press(name, budget=budget, **kw)

  results = {
    "judgeq_training": {
      "soft_tokens": args.soft_tokens,
      "examples": len(prompts),
      "prompt_len": 512,
      "steps": args.steps,
      "data_seconds": t_data,
      "train_seconds": t_train,
      "loss_first": hist[0],
      "loss_last": hist[-1],
    },
    "needle": {},
    "code_bits_per_byte": {},
  }
  for L in args.lengths:
    acc, dig = cached_needle_accuracy(params, cfg, FullCache, [L], n=args.n, return_per_digit=True)
    res = {"full": {"exact": acc[L], "per_digit": float(np.mean(dig[L]))}}
    print(f"needle @{L}: full cache exact {acc[L]:.3f} per-digit {np.mean(dig[L]):.3f}")
    for name in SCORERS:
      row = {}
      for b in BUDGETS:
        acc, dig = cached_needle_accuracy(params, cfg, press(name, b), [L], n=args.n, return_per_digit=True)
        row[str(b)] = {"exact": acc[L], "per_digit": float(np.mean(dig[L]))}
      res[name] = row
      cells = "  ".join(f"{b:.0%}: {row[str(b)]['exact']:.3f}/{row[str(b)]['per_digit']:.3f}" for b in BUDGETS)
      print(f"  {name:10s} {cells}")
    results["needle"][str(L)] = res

  ccfg, cparams, _ = load_reference_model("tiny-code")
  t0 = time.perf_counter()
  cp, cr = make_training_data(cparams, ccfg, n_examples=64, prompt_len=512, response_len=16, seed=0)  # code only
  csoft, chist, _ = train_judgeq(
    cparams, ccfg, cp, cr, JudgeQConfig(n_soft=args.soft_tokens, steps=args.steps, batch_size=8, lr=1e-2)
  )
  results["judgeq_training_tiny_code"] = {
    "seconds": time.perf_counter() - t0,
    "response_len": 16,
    "loss_first": chist[0],
    "loss_last": chist[-1],
  }
  print(f"Judge Q on tiny-code: {time.perf_counter() - t0:.0f} s, loss {chist[0]:.3g} -> {chist[-1]:.3g}")
  n_seqs = 2 if args.quick else 4
  full_bpb = cached_bits_per_byte(cparams, ccfg, FullCache, context=1024, score=64, n_seqs=n_seqs)
  results["code_bits_per_byte"]["full"] = full_bpb
  print(f"tiny-code bits/byte after a 1024-token context: full {full_bpb:.3f}")
  for name in SCORERS:
    row = {
      str(b): cached_bits_per_byte(cparams, ccfg, press(name, b, csoft), context=1024, score=64, n_seqs=n_seqs)
      for b in BUDGETS
    }
    results["code_bits_per_byte"][name] = row
    print(f"  {name:10s} " + "  ".join(f"{b:.0%}: {row[str(b)]:.3f}" for b in BUDGETS))

  # decode speed and memory on tiny-recall (2048-token prompt)
  speed = {}
  L = args.lengths[0]
  prompt = [np.random.default_rng(0).integers(0, 256, L).tolist()]
  sp = SamplingParams(max_new_tokens=32, temperature=0.0)
  for name, factory in [("full", FullCache), ("snapkv_10", press("snapkv", 0.1)), ("judgeq_10", press("judgeq", 0.1))]:
    t = generate_timings(Sampler(cfg, params, cache=factory), prompt, sp)
    # the cache as the prefill leaves it (compacted by the presses)
    speed[name] = {
      "decode_step_s": t["decode_ms_per_step"] / 1e3,
      "prefill_s": t["prefill_s"],
      "cache_bytes": t["cache_bytes"],
    }
    print(
      f"  {name:10s} decode {t['decode_ms_per_step']:.2f} ms/step, prefill {t['prefill_s']:.2f} s, "
      f"cache {t['cache_bytes'] / 1e6:.2f} MB"
    )
  results["decode"] = speed

  targets = []
  for L in args.lengths:
    jq, sk = results["needle"][str(L)]["judgeq"], results["needle"][str(L)]["snapkv"]
    worst = min(jq[str(b)]["exact"] - sk[str(b)]["exact"] for b in BUDGETS)
    targets.append(target(f"Judge Q - SnapKV needle accuracy at {L} tokens, worst budget (>= 0)", worst, 0.0))
    gain = 100 * (jq["0.1"]["exact"] - sk["0.1"]["exact"])
    targets.append(target(f"Judge Q - SnapKV needle accuracy at {L} tokens, 10 % budget (points)", gain, 3.0))
  for t in targets:
    print(f"  [{'met' if t['met'] else 'MISSED'}] {t['name']}: {t['measured']}")
  if not args.quick:
    print("wrote", write_results("eviction", results, targets))


if __name__ == "__main__":
  main()
