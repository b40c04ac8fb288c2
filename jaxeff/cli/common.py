"""Helpers shared by the command modules: model loading by name or folder, the inference-stack options and the
``Stack`` they build, number lists, the sandbox opt-out flag."""

from __future__ import annotations

import argparse

DTYPES = ("float32", "bfloat16")
PREFILL_BACKENDS = ("dense", "proxy", "xattention", "flexprefill")


def add_stack_options(p: argparse.ArgumentParser) -> None:
  """The inference-stack options shared by generate and eval long (prefill backend, KV layout, eviction)."""
  p.add_argument(
    "--prefill-attention",
    choices=PREFILL_BACKENDS,
    default="dense",
    help="prefill attention backend: dense (exact), proxy (ProxyAttn), xattention, flexprefill; decode stays "
    "dense (default: %(default)s)",
  )
  p.add_argument(
    "--gamma",
    type=float,
    default=0.95,
    help="ProxyAttn/FlexPrefill cumulative-mass threshold, XAttention threshold, in (0, 1] (default: %(default)s)",
  )
  p.add_argument(
    "--block-size", type=int, default=128, help="sparse attention block size in tokens (default: %(default)s)"
  )
  p.add_argument(
    "--min-budget-tokens",
    type=int,
    default=2048,
    help="ProxyAttn minimum per-head budget in tokens; prompts up to this length stay dense (default: %(default)s)",
  )
  p.add_argument(
    "--kv-cache",
    choices=("full", "int8", "int4", "commonkv"),
    default="full",
    help="KV cache: full precision, int8/int4 quantized (per-token groups), or CommonKV latents (the model's "
    "K/V projections are factorised by one SVD per layer group first) (default: %(default)s)",
  )
  p.add_argument(
    "--kv-rank", type=int, default=None, help="CommonKV latent rank (default: half the group's maximum rank)"
  )
  p.add_argument("--kv-group", type=int, default=2, help="CommonKV layers per group (default: %(default)s)")
  p.add_argument(
    "--kv-bits",
    type=int,
    choices=(8, 4),
    default=None,
    help="quantize CommonKV latents to this many bits (latent + quantized composition; default: off)",
  )
  p.add_argument(
    "--kv-merge-rho",
    type=float,
    default=None,
    help="merge CommonKV latents across each group's layers after prefill, keeping this least-similar "
    "fraction unmerged (e.g. 0.4; default: no merge)",
  )
  p.add_argument(
    "--kv-press",
    choices=("none", "snapkv", "pyramidkv", "h2o", "streaming", "recent", "random", "judgeq"),
    default="none",
    help="evict prompt KV entries after prefill with this scorer (judgeq needs --judgeq); the cache keeps "
    "--kv-budget of them per layer and kv head, memory freed; composes with every --kv-cache (one kept set for "
    "all heads then) and --prefill-attention (default: %(default)s)",
  )
  p.add_argument(
    "--kv-budget",
    type=float,
    default=0.2,
    help="eviction budget: a ratio in (0, 1] of the prompt, or a token count when >= 1 and integral, e.g. 256 "
    "(default: %(default)s)",
  )
  p.add_argument(
    "--kv-window", type=int, default=8, help="eviction observation window / protected recent tokens (default: 8)"
  )
  p.add_argument("--judgeq", default=None, help="folder of trained Judge Q soft tokens (`jaxeff judgeq train`)")


def load_model(model: str, dtype_name: str):
  import jax.numpy as jnp

  dtype = jnp.float32 if dtype_name == "float32" else jnp.bfloat16
  if model == "default":
    from jaxeff.models.embedded import default_model

    return default_model(dtype)
  from pathlib import Path

  from jaxeff.models.embedded import REFERENCE_MODELS, reference_model_path
  from jaxeff.models.hf_io import load_hf
  from jaxeff.models.registry import REAL_MODELS, require_fetched
  from jaxeff.tokenizer import load_tokenizer

  if model in REFERENCE_MODELS and not Path(model).exists():
    model = str(reference_model_path(model))  # an embedded reference model by name
  elif model in REAL_MODELS and not Path(model).exists():
    model = str(require_fetched(model))  # a fetched real model by name
  config, params = load_hf(model, dtype=dtype)
  return config, params, load_tokenizer(model, config=config)


def build_stack(args, config):
  """The ``jaxeff.stack.Stack`` of the stack options (prefill backend, KV layout, eviction, bits) for ``config``."""
  from jaxeff.attention import make_prefill_backend
  from jaxeff.kvcache.eviction import Press
  from jaxeff.kvcache.judgeq import JudgeQPress, SoftTokens
  from jaxeff.stack import Stack

  latent = args.kv_cache == "commonkv"
  if args.kv_cache in ("int8", "int4"):
    bits = int(args.kv_cache[3:])
  else:
    bits = args.kv_bits if latent else None
  press = None
  if args.kv_press != "none":
    b = args.kv_budget
    budget = int(b) if b >= 1 and float(b).is_integer() and b != 1.0 else float(b)
    opts = dict(budget=budget, window_size=args.kv_window)
    if args.kv_press == "judgeq":
      if not args.judgeq:
        raise ValueError("--kv-press judgeq needs --judgeq DIR (train one with `jaxeff judgeq train`)")
      press = JudgeQPress(SoftTokens.load(args.judgeq), **opts)
    else:
      press = Press(args.kv_press, **opts)
  attention = make_prefill_backend(
    args.prefill_attention,
    config,
    gamma=args.gamma,
    block_size=args.block_size,
    min_budget_tokens=args.min_budget_tokens,
  )
  return Stack(
    attention=attention,
    latent_rank=args.kv_rank if latent else None,
    latent_ratio=0.5 if latent and args.kv_rank is None else None,
    latent_group=args.kv_group,
    latent_merge_rho=args.kv_merge_rho if latent else None,
    press=press,
    kv_bits=bits,
  )


def floats(spec: str, what: str) -> list[float]:
  try:
    vals = [float(x) for x in spec.split(",") if x.strip()]
  except ValueError:
    raise ValueError(f"{what}: expected comma-separated numbers, got {spec!r}") from None
  if not vals or any(v <= 0 for v in vals):
    raise ValueError(f"{what}: expected positive numbers, got {spec!r}")
  return vals


def add_unsafe_option(parser) -> None:
  parser.add_argument(
    "--unsafe-no-isolation",
    action="store_true",
    help="run model-written programs WITHOUT the bubblewrap sandbox (resource limits only; they can read and write "
    "your files). Only for machines where bubblewrap cannot run; a warning is printed on every run",
  )
