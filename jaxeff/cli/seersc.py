"""`jaxeff seersc`: entropy-budgeted self-consistency."""

from __future__ import annotations

import json

from jaxeff.cli.common import (
  count,
  load_model,
  seed,
)


def register(sub) -> None:
  """Add the `seersc` sub-command to ``sub``."""
  sc = sub.add_parser(
    "seersc",
    help="self-consistency with SeerSC budgets vs SC / ESC / ASC on a task",
    description="Answer every problem of a task with SeerSC (System-1 entropy fixes the System-2 budget before "
    "sampling) and/or its baselines, all queries batched together, and print accuracy and token / call / time "
    "accounting per method. --data arith generates held-out digit-sum problems for the tiny-arith model; a JSONL "
    'file holds one {"prompt": ..., "answer": ...} object per line.',
  )
  sc.add_argument(
    "--model", default="tiny-arith", help="HF folder, 'default' or an embedded name (default: %(default)s)"
  )
  sc.add_argument("--data", default="arith", help="'arith' or a JSONL file of prompts and answers (default: arith)")
  sc.add_argument("--max-samples", type=count, default=8, help="N: the System-2 sample cap (default: %(default)s)")
  sc.add_argument(
    "--method",
    action="append",
    choices=("seersc", "sc", "esc", "esc-sliding", "asc"),
    default=None,
    help="method to run; repeat for several (default: seersc and sc)",
  )
  sc.add_argument("--m", type=count, default=64, help="SeerSC System-1 samples per query (default: %(default)s)")
  sc.add_argument(
    "--thresholds",
    type=float,
    nargs=2,
    default=(0.6, 2.0),
    metavar=("T1", "T2"),
    help="entropy thresholds in bits: budget 1 below T1, N//2 below T2, else N (default: 0.6 2.0; GPQA: 0.2 0.7)",
  )
  sc.add_argument(
    "--calibrate",
    type=int,
    default=0,
    metavar="K",
    help="first pick SeerSC's thresholds on K development problems (arith: K fresh problems; JSONL: the first K "
    "lines, the rest are evaluated) so that accuracy stays within 0.5 points of SC@N there (default: off)",
  )
  sc.add_argument("--window", type=count, default=5, help="ESC window size (default: %(default)s)")
  sc.add_argument("--n-problems", type=count, default=100, help="problems to run (default: %(default)s)")
  sc.add_argument("--batch-size", type=count, default=100, help="queries in flight (default: %(default)s)")
  sc.add_argument(
    "--extractor",
    choices=("boxed", "last_number", "choice", "marker"),
    default=None,
    help="answer extractor (default: 'marker' for arith, 'boxed' for JSONL)",
  )
  sc.add_argument(
    "--s1-suffix", default=None, help="text forcing a direct answer (JSONL default: 'So, the final answer is \\')"
  )
  sc.add_argument("--s2-prefix", default=None, help="text opening a reasoning sample (default: '' for JSONL)")
  sc.add_argument("--s1-max-tokens", type=count, default=None, help="System-1 token cap (arith: 1, JSONL: 16)")
  sc.add_argument("--s2-max-tokens", type=count, default=None, help="System-2 token cap (arith: 64, JSONL: 256)")
  sc.add_argument("--seed", type=seed, default=0, help="sampling seed (default: %(default)s)")
  sc.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
  sc.set_defaults(func=_cmd_seersc)


def _cmd_seersc(args) -> int:
  import jax

  from jaxeff.generation import Sampler
  from jaxeff.generation import seersc as S

  if args.max_samples < 1 or args.m < 1 or args.n_problems < 1 or args.calibrate < 0:
    raise ValueError("--max-samples, --m and --n-problems must be >= 1 and --calibrate >= 0")
  thresholds = tuple(args.thresholds)
  S.budget(0.0, args.max_samples, thresholds)  # validates N and the thresholds before any work
  over = {
    k: v
    for k, v in dict(
      extractor=args.extractor,
      s1_suffix=args.s1_suffix,
      s2_prefix=args.s2_prefix,
      s1_max_tokens=args.s1_max_tokens,
      s2_max_tokens=args.s2_max_tokens,
    ).items()
    if v is not None
  }
  if args.data == "arith":
    from jaxeff.tasks.arith import queries, sample_problems, seersc_prompting

    qs = queries(sample_problems(args.n_problems, seed=1, split="validation"))
    dev = queries(sample_problems(args.calibrate, seed=2, split="validation"), start_id=10**6)
    prompting = seersc_prompting(**over)
  else:
    from jaxeff.io import read_jsonl

    schema = {"prompt": str, "answer?": (str, int, float, type(None))}
    rows = read_jsonl(args.data, schema)[: args.n_problems + args.calibrate]
    qs = [S.Query(i, r["prompt"], None if r.get("answer") is None else str(r["answer"])) for i, r in enumerate(rows)]
    dev, qs = qs[: args.calibrate], qs[args.calibrate :]
    if not qs:
      raise ValueError(f"{args.data} holds no problems to evaluate (after {args.calibrate} development lines)")
    prompting = S.Prompting(**over)
  config, params, tok = load_model(args.model, "float32")
  if tok is None:
    raise ValueError(f"{args.model} has no tokenizer.json: seersc needs text prompts")
  sampler = Sampler(config, params)
  n = args.max_samples
  if args.calibrate:
    cal_backend = S.SamplerBackend(sampler, tok, prompting, key=jax.random.key(args.seed)).register(dev)
    cal = S.calibrate(dev, cal_backend, n, m=args.m, tolerance=0.005, batch_size=args.batch_size)
    thresholds = cal["thresholds"]
    if not args.json:
      print(
        f"calibrated thresholds {thresholds} on {len(dev)} development problems "
        f"(accuracy {cal['accuracy']:.3f} vs SC@{n} {cal['sc_accuracy']:.3f})"
      )
  make = {
    "seersc": lambda: S.SeerSC(n=n, m=args.m, thresholds=thresholds),
    "sc": lambda: S.SC(n=n),
    "esc": lambda: S.ESC(n=n, window=args.window, form="window"),
    "esc-sliding": lambda: S.ESC(n=n, window=args.window, form="sliding"),
    "asc": lambda: S.ASC(n=n),
  }
  out = {}
  for name in args.method or ["seersc", "sc"]:
    method = make[name]()
    backend = S.SamplerBackend(sampler, tok, prompting, key=jax.random.key(args.seed)).register(qs)
    rep = S.run_batch(method, qs, backend, batch_size=args.batch_size, progress=not args.json)
    out[method.name] = rep.summary()
  if args.json:
    print(json.dumps(out, indent=2))
    return 0
  cols = ["accuracy", "tokens_per_query", "s1_tokens", "s2_tokens", "calls_per_query", "rounds", "wall_s", "compile_s"]
  print(f"{'method':16s} " + " ".join(f"{c:>16s}" for c in cols))
  for name, summ in out.items():
    print(
      f"{name:16s} " + " ".join(f"{summ[c]:16.3f}" if isinstance(summ[c], float) else f"{summ[c]:16d}" for c in cols)
    )
  return 0
