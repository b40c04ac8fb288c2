"""Training throughput: jaxeff's train step vs an equivalent PyTorch loop (transformers Llama + torch AdamW).

Same model (Llama-style, float32), same batch, AdamW with the same hyper-parameters, cross-entropy over all
tokens; two sizes with targets and one long-sequence size (seq 2048) as a profile row. Reports tokens/s,
achieved GFLOP/s and model FLOP utilisation against this machine's measured float32 GEMM peak (a 2048^3 matmul
in each framework; the larger is used). Medians of interleaved steps; jaxeff compile time apart.

The profile: each size's attention alone (forward + backward at the step's shape, times its layers), jaxeff's
``flash_attention`` vs PyTorch's ``scaled_dot_product_attention`` (a fused CPU flash kernel), and the rest of
the step (step minus attention) per framework: where the gap sits.

Run:  python benchmarks/bench_training.py [--quick]
Merges into benchmarks/results/training.json ("speed" section).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks._common import interleaved_median_times, median_time, merge_results, target  # noqa: E402

SIZES = {
  "small (2 x 128, seq 256, batch 16)": dict(d=128, L=2, heads=4, kv=2, ff=384, seq=256, batch=16),
  "medium (4 x 256, seq 256, batch 16)": dict(d=256, L=4, heads=8, kv=4, ff=768, seq=256, batch=16),
  "long (4 x 256, seq 2048, batch 2)": dict(d=256, L=4, heads=8, kv=4, ff=768, seq=2048, batch=2, profile_only=True),
}
VOCAB = 272


def flops_per_token(n_params_nonemb_plus_head: int, L: int, seq: int, d: int) -> float:
  """6 N (N = non-embedding parameters incl. the head) + 12 L T d for attention scores and values."""
  return 6 * n_params_nonemb_plus_head + 12 * L * seq * d


def gemm_peak() -> float:
  import torch

  a = jnp.ones((2048, 2048), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  tj = median_time(lambda: f(a).block_until_ready(), 5)
  ta = torch.ones(2048, 2048)
  tt = median_time(lambda: ta @ ta, 5)
  return 2 * 2048**3 / min(tj, tt)


def attention_times(s: dict, reps: int) -> tuple[float, float]:
  """Seconds of one size's attention forward + backward (all its layers), jaxeff vs PyTorch, interleaved."""
  import torch

  from jaxeff.attention import flash_attention

  B, T, N, K, H = s["batch"], s["seq"], s["heads"], s["kv"], s["d"] // s["heads"]
  rng = np.random.RandomState(1)
  q, do = (rng.randn(B, T, N, H).astype(np.float32) for _ in range(2))
  k, v = (rng.randn(B, T, K, H).astype(np.float32) for _ in range(2))
  pos = jnp.broadcast_to(jnp.arange(T), (B, T))
  grad = jax.jit(jax.grad(lambda q, k, v: jnp.sum(flash_attention(q, k, v, pos, pos) * do), argnums=(0, 1, 2)))
  tq, tdo = (torch.tensor(a.transpose(0, 2, 1, 3), requires_grad=True) for a in (q, do))
  tk, tv = (torch.tensor(a.transpose(0, 2, 1, 3), requires_grad=True) for a in (k, v))
  sdpa = torch.nn.functional.scaled_dot_product_attention

  def torch_att():
    out = sdpa(tq, tk, tv, is_causal=True, enable_gqa=True)
    torch.autograd.grad(out, (tq, tk, tv), tdo)

  medians = interleaved_median_times(
    {"jaxeff": lambda: jax.block_until_ready(grad(q, k, v)), "torch": torch_att}, reps, warmup=2
  )
  return medians["jaxeff"] * s["L"], medians["torch"] * s["L"]


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--quick", action="store_true", help="fewer steps, no results file")
  args = ap.parse_args(argv)

  import torch
  from transformers import LlamaConfig, LlamaForCausalLM

  from jaxeff.config import ModelConfig
  from jaxeff.models import init_params
  from jaxeff.training import TrainConfig, make_optimizer, make_train_step
  from jaxeff.training.trainer import trainable_mask

  reps = 3 if args.quick else 10
  peak = gemm_peak()
  print(f"measured float32 GEMM peak: {peak / 1e9:.1f} GFLOP/s (torch threads {torch.get_num_threads()})")
  results = {"gemm_peak_gflops": peak / 1e9, "sizes": {}}
  targets = []
  for label, s in SIZES.items():
    mc = ModelConfig.tiny(
      vocab_size=VOCAB,
      d_model=s["d"],
      n_layers=s["L"],
      n_heads=s["heads"],
      n_kv_heads=s["kv"],
      head_dim=s["d"] // s["heads"],
      d_ff=s["ff"],
      max_position_embeddings=4096,
    )
    tc = TrainConfig(
      model=mc,
      seq_len=s["seq"],
      batch_size=s["batch"],
      lr=1e-3,
      warmup_steps=0,
      schedule="constant",
      weight_decay=0.1,
      clip_norm=0.0,
      steps=1000,
    )
    params = init_params(mc, jax.random.key(0))
    opt = make_optimizer(tc, params)
    step = jax.jit(make_train_step(tc, mc, opt, trainable_mask(params, ".*")), donate_argnums=(0, 1))
    rng = np.random.RandomState(0)
    x = rng.randint(0, VOCAB, (s["batch"], s["seq"])).astype(np.int32)
    y = rng.randint(0, VOCAB, (s["batch"], s["seq"])).astype(np.int32)
    m = np.ones(x.shape, np.float32)
    state = {"p": params, "o": opt.init(params)}
    t0 = time.perf_counter()
    compiled = step.lower(state["p"], state["o"], x, y, m).compile()
    compile_s = time.perf_counter() - t0

    def jax_step():
      state["p"], state["o"], met = compiled(state["p"], state["o"], x, y, m)
      jax.block_until_ready(met["loss"])

    hf = LlamaConfig(
      vocab_size=VOCAB,
      hidden_size=s["d"],
      intermediate_size=s["ff"],
      num_hidden_layers=s["L"],
      num_attention_heads=s["heads"],
      num_key_value_heads=s["kv"],
      max_position_embeddings=4096,
      tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(hf).train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    topt = torch.optim.AdamW(
      [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
      lr=1e-3,
      betas=(0.9, 0.95),
      eps=1e-8,
    )
    tx, ty = torch.tensor(x, dtype=torch.long), torch.tensor(y, dtype=torch.long)

    def torch_step():
      topt.zero_grad(set_to_none=True)
      logits = model(tx).logits
      loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), ty.reshape(-1))
      loss.backward()
      topt.step()

    medians = interleaved_median_times({"jaxeff": jax_step, "torch": torch_step}, reps, warmup=2)
    tj, tt = medians["jaxeff"], medians["torch"]
    att_j, att_t = attention_times(s, reps)
    tokens = s["batch"] * s["seq"]
    n_compute = mc.param_count(include_embeddings=False) + mc.d_model * VOCAB
    fpt = flops_per_token(n_compute, s["L"], s["seq"], s["d"])
    row = {
      "jaxeff_tokens_per_s": tokens / tj,
      "torch_tokens_per_s": tokens / tt,
      "jaxeff_gflops": fpt * tokens / tj / 1e9,
      "torch_gflops": fpt * tokens / tt / 1e9,
      "jaxeff_mfu": fpt * tokens / tj / peak,
      "torch_mfu": fpt * tokens / tt / peak,
      "jaxeff_compile_s": compile_s,
      "params": mc.param_count(),
      "step_s": {"jaxeff": tj, "torch": tt},
      "attention_fwd_bwd_s": {"jaxeff": att_j, "torch": att_t},
      "rest_of_step_s": {"jaxeff": tj - att_j, "torch": tt - att_t},
    }
    results["sizes"][label] = row
    if not s.get("profile_only"):
      targets.append(target(f"training tokens/s ratio jaxeff / torch, {label}", tt / tj, 1.0))
    print(
      f"{label}: jaxeff {tokens / tj:,.0f} tok/s (MFU {row['jaxeff_mfu']:.1%}), torch {tokens / tt:,.0f} tok/s "
      f"(MFU {row['torch_mfu']:.1%}), x{tt / tj:.2f}; compile {compile_s:.1f} s\n"
      f"  attention fwd+bwd x{s['L']} layers: jaxeff {att_j * 1e3:.0f} ms, torch {att_t * 1e3:.0f} ms; "
      f"rest of the step: jaxeff {(tj - att_j) * 1e3:.0f} ms, torch {(tt - att_t) * 1e3:.0f} ms"
    )
  if not args.quick:
    print("wrote", merge_results("training", {"speed": results}, targets))
  for t in targets:
    print(f"  [{'met' if t['met'] else 'MISSED'}] {t['name']}: {t['measured']:.2f} (target >= {t['target']})")


if __name__ == "__main__":
  main()
