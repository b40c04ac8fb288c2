"""`jaxeff eval`: bits per byte on a corpus, and the long-context harness (`eval long`)."""

from __future__ import annotations

import json

from jaxeff.cli.common import (
  add_stack_options,
  build_stack,
  count,
  list_option,
  load_model,
  seed,
)


def register(sub) -> None:
  """Add the `eval` sub-command to ``sub``."""
  ev = sub.add_parser(
    "eval",
    help="perplexity / bits per byte on a corpus split, or the long-context tasks (eval long)",
    description="`jaxeff eval [corpus]`: evaluate a model on packed sequences of a corpus split: mean token "
    "loss (nats), perplexity and bits per byte. `jaxeff eval long`: RULER-style long-context tasks built with the "
    "model's tokenizer at exact lengths, run through the chosen prefill backend and KV cache in the question-aware "
    "or question-agnostic protocol; prints score per (task, length) with n and a bootstrap 95 % interval.",
  )
  ev.add_argument(
    "kind",
    nargs="?",
    choices=("corpus", "long"),
    default="corpus",
    help="corpus: perplexity / bits per byte on a corpus split; long: the RULER-style long-context tasks "
    "(jaxeff.evals) through the inference stack chosen by the options below (default: %(default)s)",
  )
  ev.add_argument(
    "--model",
    default="default",
    help="a local HF folder, 'default', an embedded reference model or a fetched real model (e.g. "
    "smollm2-135m-instruct) (default: %(default)s)",
  )
  ev.add_argument(
    "--corpus", choices=("python", "gcide", "pydoc"), default="python", help="corpus (default: %(default)s)"
  )
  ev.add_argument(
    "--split", choices=("train", "validation"), default="validation", help="split (default: %(default)s)"
  )
  ev.add_argument("--seq-len", type=count, default=512, help="tokens per sequence (default: %(default)s)")
  ev.add_argument("--batches", type=count, default=8, help="batches of 8 sequences to score (default: %(default)s)")
  ev.add_argument("--json", action="store_true", help="print one JSON object instead of text")
  ev.add_argument(
    "--tasks",
    nargs="+",
    action=list_option(str),
    default=["niah_single", "niah_multikey"],
    help="long: tasks among niah_single, niah_multikey, niah_multivalue, vt, cwe, qa (default: %(default)s)",
  )
  ev.add_argument(
    "--lengths",
    nargs="+",
    action=list_option(count),
    default=[2048],
    help="long: prompt lengths in tokens (default: 2048)",
  )
  ev.add_argument("--n", type=count, default=8, help="long: examples per (task, length) cell (default: %(default)s)")
  ev.add_argument("--seed", type=seed, default=0, help="long: example seed (default: %(default)s)")
  ev.add_argument(
    "--protocol",
    choices=("aware", "agnostic"),
    default="aware",
    help="long: aware = question inside the prefill (RULER); agnostic = context compressed before the question "
    "is seen, the question decoded through the compressed cache (kvpress) (default: %(default)s)",
  )
  ev.add_argument("--batch-size", type=count, default=1, help="long: examples per batch (default: %(default)s)")
  ev.add_argument("--out", default=None, help="long: write every record and the summary to this JSON file")
  ev.add_argument("--plot", default=None, help="long: save a bar chart of the scores with their intervals (PNG)")
  add_stack_options(ev)
  ev.set_defaults(func=_cmd_eval)


def _cmd_eval(args) -> int:
  if args.kind == "long":
    return _cmd_eval_long(args)
  import math

  from jaxeff.training import data as data_lib
  from jaxeff.training.trainer import evaluate

  config, params, tokenizer = load_model(args.model, "float32")
  if tokenizer is None:
    raise ValueError(f"{args.model} has no tokenizer.json; eval needs one to tokenise the corpus")
  if args.seq_len < 2 or args.seq_len + 1 > config.max_position_embeddings:
    raise ValueError(f"--seq-len must be in [2, {config.max_position_embeddings - 1}], got {args.seq_len}")
  batches = data_lib.eval_batches(
    tokenizer, args.corpus, args.split, seq_len=args.seq_len, batch_size=8, n_batches=args.batches
  )
  ev = evaluate(params, batches, config=config, byte_lengths=data_lib.token_byte_lengths(tokenizer, config.vocab_size))
  ev["perplexity"] = math.exp(ev["loss"])
  if args.json:
    print(json.dumps(ev))
  else:
    print(
      f"{args.model} on {args.corpus}/{args.split}: loss {ev['loss']:.4f} nats/token, perplexity "
      f"{ev['perplexity']:.2f}, bits/byte {ev.get('bits_per_byte', float('nan')):.4f} ({int(ev['tokens'])} tokens)"
    )

  return 0


def _cmd_eval_long(args) -> int:
  from jaxeff.evals import TASKS, Method, format_table, make_examples, run_methods, summarize

  bad = [t for t in args.tasks if t not in TASKS]
  if bad:
    raise ValueError(f"unknown tasks {bad}; choose from {', '.join(TASKS)}")
  if args.n < 1 or args.batch_size < 1:
    raise ValueError("--n and --batch-size must be >= 1")
  from jaxeff.io import check_output_file

  for flag, path in (("--out", args.out), ("--plot", args.plot)):
    if path:
      check_output_file(path, flag)
  config, params, tok = load_model(args.model, "float32")
  if tok is None:
    raise ValueError(
      f"{args.model} has no tokenizer.json; the long-context tasks are built with the model's tokenizer"
    )
  too_long = [L for L in args.lengths if not 256 <= L <= config.max_position_embeddings - 64]
  if too_long:
    raise ValueError(
      f"--lengths must be in [256, {config.max_position_embeddings - 64}] for this model, got {too_long}"
    )
  stack = build_stack(args, config)
  method = Method.from_stack(stack.describe(), stack, config, params)
  examples = [ex for t in args.tasks for L in args.lengths for ex in make_examples(tok, t, L, args.n, seed=args.seed)]
  from tqdm.auto import tqdm

  bar = tqdm(total=len(examples), desc="eval long", unit="ex", disable=args.json)
  recs = run_methods(
    config,
    params,
    [method],
    examples,
    tok,
    protocol=args.protocol,
    batch_size=args.batch_size,
    progress=lambda s: bar.update(int(s.split("/")[0]) - bar.n),
  )
  bar.close()
  rows = summarize(recs)
  if args.out:
    from pathlib import Path

    Path(args.out).write_text(json.dumps({"protocol": args.protocol, "summary": rows, "records": recs}, indent=1))
  if args.plot:
    try:
      from jaxeff.evals.plots import plot_scores
    except ImportError:
      raise ValueError("--plot needs matplotlib: pip install matplotlib") from None
    plot_scores(rows, title=f"{args.model}, {args.protocol}: {method.name}", path=args.plot)
  if args.json:
    print(json.dumps({"protocol": args.protocol, "summary": rows}))
  else:
    print(f"{args.model}, protocol {args.protocol}, stack: {method.name}")
    print(format_table(rows))
  return 0
