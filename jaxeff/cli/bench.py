"""`jaxeff bench`: quick timings."""

from __future__ import annotations

import json

from jaxeff.cli.common import count, list_option, positive_float


def register(sub) -> None:
  """Add the `bench` sub-command to ``sub``."""
  be = sub.add_parser(
    "bench",
    help="compare methods side by side (attention: dense vs ProxyAttn vs XAttention vs FlexPrefill)",
    description="Time prefill attention methods on synthetic structured q/k at matched density and print one "
    "line per (length, method): time, speedup vs dense, density, attention-mass recall, output error, "
    "estimation share. benchmarks/bench_proxyattn.py runs the same comparison and writes JSON.",
  )
  be.add_argument("what", choices=("attention",), help="what to compare")
  be.add_argument(
    "--lengths", nargs="+", action=list_option(count), default=[8192], help="sequence lengths (default: %(default)s)"
  )
  be.add_argument("--q-heads", type=count, default=8, help="query heads (default: %(default)s)")
  be.add_argument("--kv-heads", type=count, default=2, help="key/value heads (default: %(default)s)")
  be.add_argument("--head-dim", type=count, default=128, help="head dimension (default: %(default)s)")
  be.add_argument("--gamma", type=positive_float, default=0.95, help="ProxyAttn gamma (default: %(default)s)")
  be.add_argument("--block-size", type=count, default=128, help="block size (default: %(default)s)")
  be.add_argument("--stride", type=count, default=4, help="ProxyAttn stride (default: %(default)s)")
  be.add_argument(
    "--min-budget-tokens", type=count, default=2048, help="ProxyAttn minimum budget (default: %(default)s)"
  )
  be.add_argument(
    "--methods",
    nargs="+",
    action=list_option(str, choices=("dense", "proxy", "xattention", "flexprefill")),
    default=["dense", "proxy", "xattention", "flexprefill"],
    help="methods to run (default: all)",
  )
  be.add_argument("--no-match", action="store_true", help="run peers at their paper defaults, not matched density")
  be.add_argument("--repeats", type=count, default=3, help="timed calls per method; medians (default: %(default)s)")
  be.add_argument("--json", action="store_true", help="print one JSON list instead of text")
  be.set_defaults(func=_cmd_bench)


def _cmd_bench(args) -> int:
  from jaxeff.attention.bench import compare_attention

  rows = compare_attention(
    args.lengths,
    q_heads=args.q_heads,
    kv_heads=args.kv_heads,
    head_dim=args.head_dim,
    gamma=args.gamma,
    block_size=args.block_size,
    stride=args.stride,
    min_budget_tokens=args.min_budget_tokens,
    methods=args.methods,
    match_density=not args.no_match,
    repeats=args.repeats,
    log=(lambda line: None) if args.json else print,
  )
  if args.json:
    print(json.dumps(rows, default=float))
  return 0
