"""The composed stack: each piece alone and all together, side by side in one run, on the embedded models.

  python benchmarks/bench_stack.py            # about 7 minutes on 2 cores
  python benchmarks/bench_stack.py --quick    # fewer needles and training steps, no results file

1. ``tiny-recall`` with a 2,048-token prompt: the full cache; ProxyAttn prefill (gamma 0.95, block 64); CommonKV
   latents at half the group rank; Judge Q at a 10 % budget (32 soft tokens trained on the model's own answers);
   int4 keys/values; the KV pieces together (CommonKV + Judge Q + int4 latents); everything (ProxyAttn + CommonKV
   + Judge Q + int4). Per configuration: exact pass-key accuracy through the cache (40 needles, the question
   decoded after compression), the bytes the prefill leaves in the cache, prefill seconds and decode ms/step
   (median of 3 ``generate`` calls of 32 tokens, compile excluded).
2. ``tiny-moe``: the dense MoE and its CAMERA-compacted version (40 % of the micro-experts) with the full cache and
   under the stack (ProxyAttn + CommonKV + SnapKV 20 % + int4): code bits/byte on 128 tokens decoded through the
   cache after a 384-token context (the model was trained on 512-token windows), cache bytes, MoE weight bytes.

Merges ``results["composed_stack"]`` into ``benchmarks/results/inference.json`` (no target of its own: the issue
asks for the composition and its identity tests; the numbers show what composing costs and saves).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402

from benchmarks._common import generate_timings, merge_results  # noqa: E402


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--quick", action="store_true", help="8 needles, 20 Judge Q steps, no results file")
  ap.add_argument("--length", type=int, default=2048, help="prompt length on tiny-recall (default: %(default)s)")
  ap.add_argument("--n", type=int, default=40, help="needles per configuration (default: %(default)s)")
  ap.add_argument("--steps", type=int, default=150, help="Judge Q training steps (default: %(default)s)")
  args = ap.parse_args(argv)
  if args.quick:
    args.n, args.steps = 8, 20

  from jaxeff.attention import ProxyAttention
  from jaxeff.evals.cached import cached_bits_per_byte, cached_needle_accuracy
  from jaxeff.generation import SamplingParams
  from jaxeff.kvcache import JudgeQPress, Press
  from jaxeff.models.embedded import load_reference_model
  from jaxeff.moe.camera import calibration_windows, camera_prune, compact, moe_param_bytes
  from jaxeff.stack import Stack
  from jaxeff.tokenizer import ByteTokenizer
  from jaxeff.training import data as data_lib
  from jaxeff.training.judgeq import JudgeQConfig, make_training_data, train_judgeq

  proxy = ProxyAttention(gamma=0.95, block_size=64, min_budget_tokens=256)
  cfg, params, _ = load_reference_model("tiny-recall")
  t0 = time.perf_counter()
  prompts, responses = make_training_data(params, cfg, n_examples=64, prompt_len=512, response_len=5, seed=0)
  soft, hist, _ = train_judgeq(params, cfg, prompts, responses, JudgeQConfig(n_soft=32, steps=args.steps))
  jq_s = time.perf_counter() - t0
  print(f"Judge Q: {args.steps} steps in {jq_s:.0f} s, loss {hist[0]:.3g} -> {hist[-1]:.3g}", flush=True)
  judgeq = JudgeQPress(soft, budget=0.1)
  configs = {
    "full": Stack(),
    "proxyattn": Stack(attention=proxy),
    "commonkv_50": Stack(latent_ratio=0.5),
    "judgeq_10": Stack(press=judgeq),
    "int4": Stack(kv_bits=4),
    "commonkv_50+judgeq_10+int4": Stack(latent_ratio=0.5, press=judgeq, kv_bits=4),
    "proxyattn+commonkv_50+judgeq_10+int4": Stack(attention=proxy, latent_ratio=0.5, press=judgeq, kv_bits=4),
  }
  L = args.length
  prompt = [np.random.default_rng(0).integers(0, 256, L).tolist()]
  sp = SamplingParams(max_new_tokens=32, temperature=0.0)
  dense = {}
  for name, stack in configs.items():
    p, factory = stack.prepare(cfg, params)
    acc = cached_needle_accuracy(p, cfg, factory, [L], n=args.n, attention=stack.attention)[L]
    row = {"needle_accuracy": acc, **generate_timings(stack.sampler(cfg, params), prompt, sp)}
    dense[name] = row
    print(
      f"  {name:38s} needle {acc:.3f}  cache {row['cache_bytes'] / 1e6:6.3f} MB  prefill {row['prefill_s']:.2f} s  "
      f"decode {row['decode_ms_per_step']:.2f} ms/step",
      flush=True,
    )
  full_b = dense["full"]["cache_bytes"]
  for row in dense.values():
    row["cache_fraction"] = row["cache_bytes"] / full_b

  # 2. CAMERA-compacted MoE under the stack
  mcfg, mparams, mtok = load_reference_model("tiny-moe")
  stream = np.concatenate(data_lib.tokenize_corpus("python", "train", ByteTokenizer()))
  pruned, rep = camera_prune(mparams, mcfg, calibration_windows(stream, 8 if args.quick else 32, 512), 0.4)
  small = compact(pruned, mcfg, rep)
  kv = Stack(attention=proxy, latent_ratio=0.5, press=Press("snapkv", budget=0.2), kv_bits=4)
  moe = {}
  n_seqs = 2 if args.quick else 8
  mprompt = [stream[:384].tolist()]  # tiny-moe was trained on 512-token windows
  for name, weights, stack in [
    ("dense MoE, full cache", mparams, Stack()),
    ("CAMERA 40 %, full cache", small, Stack()),
    ("CAMERA 40 % + stack", small, kv),
  ]:
    p, factory = stack.prepare(mcfg, weights)
    bpb = cached_bits_per_byte(
      p, mcfg, factory, context=384, score=128, n_seqs=n_seqs, attention=stack.attention, tokenizer=mtok
    )
    row = {"bits_per_byte": bpb, "moe_weight_bytes": moe_param_bytes(weights)}
    row.update(generate_timings(stack.sampler(mcfg, weights), mprompt, sp))
    moe[name] = row
    print(
      f"  {name:26s} bits/byte {bpb:.3f}  MoE weights {row['moe_weight_bytes'] / 1e6:.2f} MB  cache "
      f"{row['cache_bytes'] / 1e6:.3f} MB  decode {row['decode_ms_per_step']:.2f} ms/step",
      flush=True,
    )
  if not args.quick:
    results = {
      "composed_stack": {
        "tiny_recall": dense,
        "tiny_moe": moe,
        "settings": {
          "prompt_tokens": L,
          "needles": args.n,
          "judgeq": {"soft_tokens": 32, "steps": args.steps, "train_seconds": jq_s},
          "proxyattn": {"gamma": 0.95, "block_size": 64, "min_budget_tokens": 256},
          "new_tokens": 32,
        },
      }
    }
    print("wrote", merge_results("inference", results, []))


if __name__ == "__main__":
  main()
