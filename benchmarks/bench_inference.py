"""jaxeff vs transformers' PyTorch Llama on CPU, side by side, same weights, float32.

Measures: prefill tokens/s at 512 and 2048 tokens (batch 1, into a KV cache, next-token logits only, as
a generation prefill: torch with logits_to_keep=1, jaxeff with logits_index), decode tokens/s at
batch 1 and 8 (greedy, 128-token prompt, 128 new tokens, fixed-size cache), and checkpoint load time (local
safetensors folder -> ready arrays). Medians; jaxeff compile time is reported apart.

Run:  python benchmarks/bench_inference.py [--quick]
Writes benchmarks/results/inference.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks._common import SETTLE_S, interleaved_median_times, merge_results, target  # noqa: E402


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--quick", action="store_true", help="fewer repeats and shorter sequences (smoke run)")
  ap.add_argument("--no-write", action="store_true", help="print only; do not write the results JSON")
  args = ap.parse_args(argv)

  import torch
  from transformers import AutoModelForCausalLM, LlamaConfig

  from jaxeff.generation import Sampler, SamplingParams
  from jaxeff.kvcache import FullCache
  from jaxeff.models import forward, load_hf, save_hf

  reps = 2 if args.quick else 5
  prefill_lens = (128, 512) if args.quick else (512, 2048)
  new_tokens = 32 if args.quick else 128
  prompt_len = 128

  hf_cfg = LlamaConfig(
    vocab_size=32000,
    hidden_size=512,
    intermediate_size=1536,
    num_hidden_layers=4,
    num_attention_heads=8,
    num_key_value_heads=2,
    max_position_embeddings=4096,
  )
  torch.manual_seed(0)
  model = AutoModelForCausalLM.from_config(hf_cfg).eval()
  folder = tempfile.mkdtemp(prefix="jaxeff_bench_")
  model.save_pretrained(folder)
  results: dict = {
    "model": "llama 4 layers, d_model 512, GQA 8/2, d_ff 1536, vocab 32000, float32",
    "n_params": sum(p.numel() for p in model.parameters()),
  }
  targets = []

  # ------------------------------------------------------------ checkpoint load
  # Two files with the same weights: the one transformers wrote (tensors at arbitrary 16-byte offsets) and the
  # one jaxeff's save_hf wrote (64-byte aligned). XLA:CPU can use an aligned host buffer in place, so the
  # aligned file maps with no copy; the other costs one copy of every tensor. torch maps either lazily.
  config, params = load_hf(folder, dtype=jnp.float32)
  aligned = save_hf(tempfile.mkdtemp(prefix="jaxeff_bench_aligned_"), config, params)
  del params
  results["load_s"] = {}
  for label, path in (("hf_written", folder), ("jaxeff_written", aligned)):

    def jax_load(path=path):
      _, p = load_hf(path, dtype=jnp.float32)
      jax.block_until_ready(p)

    def torch_load(path=path):
      AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)

    medians = interleaved_median_times({"jaxeff": jax_load, "torch": torch_load}, 3 * reps)
    t_jax, t_torch = medians["jaxeff"], medians["torch"]
    results["load_s"][label] = {"jaxeff": t_jax, "torch": t_torch}
    targets.append(
      target(f"checkpoint load speed ratio, {label} file (torch time / jaxeff time)", t_torch / t_jax, 1.0)
    )
    print(f"load ({label}): jaxeff {t_jax * 1e3:.1f} ms, torch {t_torch * 1e3:.1f} ms, ratio x{t_torch / t_jax:.2f}")

  # Time to first logits (load + one 128-token forward, compiled beforehand): counts torch's lazy page-ins.
  ids128 = np.random.RandomState(0).randint(0, 32000, (1, 128))
  fwd = jax.jit(lambda p, t: forward(p, t, jnp.arange(t.shape[1])[None], config=config)[0])
  jax.block_until_ready(fwd(load_hf(folder, dtype=jnp.float32)[1], ids128))

  def jax_first():
    _, p = load_hf(folder, dtype=jnp.float32)
    jax.block_until_ready(fwd(p, ids128))

  def torch_first():
    m = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.inference_mode():
      m(torch.tensor(ids128))

  results["time_to_first_logits_s"] = interleaved_median_times({"jaxeff": jax_first, "torch": torch_first}, reps)
  print("time to first logits (hf-written file):", results["time_to_first_logits_s"])

  config, params = load_hf(folder, dtype=jnp.float32)

  # ------------------------------------------------------------ prefill
  results["prefill"] = {}
  for T in prefill_lens:
    ids = np.random.RandomState(T).randint(0, 32000, (1, T))
    pos = np.arange(T)[None]

    def prefill(p, t, q, T=T):
      cache = FullCache.init(config, 1, T, jnp.float32)
      last = jnp.full((1,), T - 1)
      return forward(p, t, q, cache, config=config, is_prefill=True, logits_index=last)

    t0 = time.perf_counter()
    compiled = jax.jit(prefill).lower(params, ids, pos).compile()
    compile_s = time.perf_counter() - t0
    tid = torch.tensor(ids)

    def torch_prefill():
      with torch.inference_mode():
        model(tid, use_cache=True, logits_to_keep=1)

    medians = interleaved_median_times(
      {"jaxeff": lambda: jax.block_until_ready(compiled(params, ids, pos)), "torch": torch_prefill}, reps
    )
    tj, tt = medians["jaxeff"], medians["torch"]
    results["prefill"][str(T)] = {
      "jaxeff_tok_s": T / tj,
      "torch_tok_s": T / tt,
      "jaxeff_compile_s": compile_s,
    }
    targets.append(target(f"prefill {T} tokens/s ratio (jaxeff / torch)", tt / tj, 1.0))
    print(
      f"prefill {T}: jaxeff {T / tj:,.0f} tok/s, torch {T / tt:,.0f} tok/s, x{tt / tj:.2f} (compile {compile_s:.1f} s)"
    )

  # ------------------------------------------------------------ decode
  results["decode"] = {}
  sampler = Sampler(config, params, pad_multiple=16)
  sp = SamplingParams(max_new_tokens=new_tokens, temperature=0.0)
  for B in (1, 8):
    prompts = np.random.RandomState(B).randint(0, 32000, (B, prompt_len)).tolist()
    first = sampler.generate(prompts, sp, jax.random.key(0))
    compile_s = first.accounting.compile_s
    steps = new_tokens - 1  # decode calls after the prefill

    tid = torch.tensor(prompts)

    def torch_decode():
      with torch.inference_mode():
        out = model(tid, use_cache=True)
        cache = out.past_key_values
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        t0 = time.perf_counter()
        for _ in range(steps):
          out = model(nxt, past_key_values=cache, use_cache=True)
          cache = out.past_key_values
          nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        return time.perf_counter() - t0, nxt

    torch_decode()
    jax_s, torch_s = [], []
    for _ in range(max(2, reps - 2)):  # interleaved: the VM's speed drifts between minutes
      time.sleep(SETTLE_S)  # as interleaved_median_times: torch's OpenMP workers stop spinning first
      jax_s.append(sampler.generate(prompts, sp, jax.random.key(0)).accounting.decode_s)
      time.sleep(SETTLE_S)
      torch_s.append(torch_decode()[0])
    tj, tt = float(np.median(jax_s)), float(np.median(torch_s))
    jax_tok_s, torch_tok_s = B * steps / tj, B * steps / tt
    # Same weights, same greedy rule: the generations agree (a correctness guard on the comparison).
    with torch.inference_mode():
      ref = model.generate(tid[:1], max_new_tokens=8, do_sample=False, pad_token_id=0)[0, prompt_len:].tolist()
    agree = ref == first.tokens[0, 0, :8].tolist()
    results["decode"][f"batch{B}"] = {
      "jaxeff_tok_s": jax_tok_s,
      "torch_tok_s": torch_tok_s,
      "jaxeff_compile_s": compile_s,
      "greedy_tokens_agree_with_torch": agree,
    }
    targets.append(target(f"decode batch {B} tokens/s ratio (jaxeff / torch)", jax_tok_s / torch_tok_s, 1.0))
    print(
      f"decode B={B}: jaxeff {jax_tok_s:,.0f} tok/s, torch {torch_tok_s:,.0f} tok/s, x{jax_tok_s / torch_tok_s:.2f}"
      f" (compile {compile_s:.1f} s, greedy agree: {agree})"
    )

  if not args.no_write and not args.quick:
    print("wrote", merge_results("inference", results, targets))  # keeps bench_stack's section
  for t in targets:
    print(f"  [{'met' if t['met'] else 'MISSED'}] {t['name']}: {t['measured']:.2f} (target >= {t['target']})")


if __name__ == "__main__":
  main()
