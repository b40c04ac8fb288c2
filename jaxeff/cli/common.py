"""Helpers shared by the command modules: model loading by name or folder, the inference-stack options and the
``Stack`` they build, number lists, the sandbox opt-out flag."""

from __future__ import annotations

import argparse
import functools
import math


# ------------------------------------------------------------------------------------------------ list options
# One list syntax for every option that takes several values: commas, spaces, or both (``--lengths 2048,4096``
# = ``--lengths 2048 4096``).
def list_option(conv=str, choices=None):
  """``add_argument(..., nargs="+", action=list_option(int))``: every token split on commas, each piece converted
  with ``conv`` (and checked against ``choices``); the option's value is one flat list."""

  class _List(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
      out = []
      for token in values:
        for piece in (x.strip() for x in str(token).split(",")):
          if not piece:
            continue
          try:
            v = conv(piece)
          except (argparse.ArgumentTypeError, ValueError) as e:
            parser.error(f"{option_string or self.dest}: {e}")
          if choices is not None and v not in choices:
            parser.error(f"{option_string or self.dest}: {piece!r} is not one of {', '.join(map(str, choices))}")
          out.append(v)
      if not out:
        parser.error(f"{option_string or self.dest}: expected at least one value")
      setattr(namespace, self.dest, out)

  return _List


class JoinedList(argparse.Action):
  """``nargs="+", action=JoinedList``: the values joined with commas into one string, for options parsed as a
  comma-separated string later (``--sizes 32x2 48x2`` = ``--sizes 32x2,48x2``)."""

  def __call__(self, parser, namespace, values, option_string=None):
    setattr(namespace, self.dest, ",".join(str(v).strip(",") for v in values))


DTYPES = ("float32", "bfloat16")
PREFILL_BACKENDS = ("dense", "proxy", "xattention", "flexprefill")


# ------------------------------------------------------------------ argument types (checked before any work)
def _number(text: str, kind: type):
  try:
    value = kind(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
  if kind is float and not math.isfinite(value):
    raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
  return value


def _ranged(name: str, kind: type, ok, words: str):
  """An argparse ``type=`` that parses ``kind`` and requires ``ok(value)`` ("must be <words>" otherwise)."""

  def check(text: str):
    v = _number(text, kind)
    if not ok(v):
      raise argparse.ArgumentTypeError(f"must be {words}, got {v}")
    return v

  check.__name__ = check.__qualname__ = name
  check.__doc__ = f"{'An integer' if kind is int else 'A finite number'} that must be {words}."
  return check


count = _ranged("count", int, lambda v: v >= 1, ">= 1")  # sizes, lengths, counts, steps
nonneg_int = _ranged("nonneg_int", int, lambda v: v >= 0, ">= 0")
seed = _ranged("seed", int, lambda v: 0 <= v < 2**32, "in [0, 2**32)")  # a PRNG seed
positive_float = _ranged("positive_float", float, lambda v: v > 0, "> 0")
nonneg_float = _ranged("nonneg_float", float, lambda v: v >= 0, ">= 0")
unit_float = _ranged("unit_float", float, lambda v: 0 < v <= 1, "in (0, 1]")
fraction = _ranged("fraction", float, lambda v: 0 <= v <= 1, "in [0, 1]")


def budget(text: str) -> float:
  """An eviction budget: a ratio in (0, 1] or a whole token count >= 1."""
  v = _number(text, float)
  if v <= 0 or (v > 1 and not v.is_integer()):
    raise argparse.ArgumentTypeError(f"must be a ratio in (0, 1] or a whole token count >= 1, got {text}")
  return v


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
    type=positive_float,
    default=0.95,
    help="ProxyAttn/FlexPrefill cumulative-mass threshold, XAttention threshold, in (0, 1] (default: %(default)s)",
  )
  p.add_argument(
    "--block-size", type=count, default=128, help="sparse attention block size in tokens (default: %(default)s)"
  )
  p.add_argument(
    "--min-budget-tokens",
    type=count,
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
    "--kv-rank", type=count, default=None, help="CommonKV latent rank (default: half the group's maximum rank)"
  )
  p.add_argument("--kv-group", type=count, default=2, help="CommonKV layers per group (default: %(default)s)")
  p.add_argument(
    "--kv-bits",
    type=int,
    choices=(8, 4),
    default=None,
    help="quantize CommonKV latents to this many bits (latent + quantized composition; default: off)",
  )
  p.add_argument(
    "--kv-merge-rho",
    type=unit_float,
    default=None,
    help="merge CommonKV latents across each group's layers after prefill, keeping this least-similar "
    "fraction unmerged (e.g. 0.4; default: no merge)",
  )
  p.add_argument(
    "--kv-select-tiles",
    type=count,
    default=None,
    help="CommonKV selective reconstruction: at each decode step rebuild keys only for this many 32-slot tiles, "
    "those whose key bound is highest (plus the first and newest): decode work bounded whatever the context "
    "(e.g. 16; default: every cached key)",
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
    type=budget,
    default=0.2,
    help="eviction budget: a ratio in (0, 1] of the prompt, or a token count when >= 1 and integral, e.g. 256 "
    "(default: %(default)s)",
  )
  p.add_argument(
    "--kv-window", type=count, default=8, help="eviction observation window / protected recent tokens (default: 8)"
  )
  p.add_argument("--judgeq", default=None, help="folder of trained Judge Q soft tokens (`jaxeff judgeq train`)")


def load_model(model: str, dtype_name: str):
  """``jaxeff.models.load`` with the CLI's ``--dtype`` name."""
  import jax.numpy as jnp

  from jaxeff.models.embedded import load

  return load(model, jnp.float32 if dtype_name == "float32" else jnp.bfloat16)


def build_stack(args, config):
  """``Stack.from_options`` of the stack flags (``add_stack_options``)."""
  from jaxeff.stack import Stack

  names = ("prefill_attention", "gamma", "block_size", "min_budget_tokens", "kv_cache", "kv_rank", "kv_group")
  names += ("kv_merge_rho", "kv_select_tiles", "kv_press", "kv_budget", "kv_window", "judgeq")
  return Stack.from_options(config, kv_bits=args.kv_bits, **{k: getattr(args, k) for k in names})


def floats(spec: str, what: str, *, whole: bool = False) -> list[float]:
  """Comma-separated positive finite numbers (``whole``: whole numbers, e.g. token counts written 1e6)."""
  try:
    vals = [float(x) for x in spec.split(",") if x.strip()]
  except ValueError:
    raise ValueError(f"{what}: expected comma-separated numbers, got {spec!r}") from None
  if not vals or any(not math.isfinite(v) or v <= 0 for v in vals):
    raise ValueError(f"{what}: expected positive finite numbers, got {spec!r}")
  if whole and any(not v.is_integer() for v in vals):
    raise ValueError(f"{what}: expected whole numbers, got {spec!r}")
  return vals


def add_unsafe_option(parser) -> None:
  parser.add_argument(
    "--unsafe-no-isolation",
    action="store_true",
    help="run model-written programs WITHOUT the bubblewrap sandbox (resource limits only; they can read and write "
    "your files). Only for machines where bubblewrap cannot run; a warning is printed on every run",
  )


def locks_out(what: str, when=lambda args: True):
  """Decorator of a command body: hold ``jaxeff.io.locked_folder(args.out)`` while it runs (when ``args.out`` is
  set and ``when(args)``), so a second writer of the same output folder fails at once, before any work."""

  def deco(fn):
    @functools.wraps(fn)
    def run(args):
      if not getattr(args, "out", None) or not when(args):
        return fn(args)
      from jaxeff.io import locked_folder

      with locked_folder(args.out, what):
        return fn(args)

    return run

  return deco
