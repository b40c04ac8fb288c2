"""`jaxeff judgeq`: train Judge Q soft tokens."""

from __future__ import annotations

import json

from jaxeff.cli.common import (
  count,
  load_model,
  locks_out,
  positive_float,
  seed,
)


def register(sub) -> None:
  """Add the `judgeq` sub-command to ``sub``."""
  jq = sub.add_parser(
    "judgeq",
    help="train Judge Q soft tokens for KV eviction",
    description="`jaxeff judgeq train --model M --out DIR`: generate training data with the model itself (pass-key "
    "prompts and stdlib code, greedy responses), train only the soft-token embeddings to align their attention "
    "over the prompt with the response's, and save DIR/soft_emb.npy (use with `generate --kv-press judgeq "
    "--judgeq DIR`).",
  )
  jq.add_argument("action", choices=("train",), help="train: generate data with the model, train, save")
  jq.add_argument(
    "--model", default="tiny-recall", help="HF folder, 'default' or an embedded name (default: %(default)s)"
  )
  jq.add_argument("--out", required=True, help="output folder for soft_emb.npy and judgeq.json")
  jq.add_argument("--soft-tokens", type=count, default=32, help="number of soft tokens (default: %(default)s)")
  jq.add_argument("--examples", type=count, default=64, help="self-generated training examples (default: %(default)s)")
  jq.add_argument("--prompt-len", type=count, default=512, help="prompt tokens per example (default: %(default)s)")
  jq.add_argument("--response-len", type=count, default=5, help="greedy response tokens (default: %(default)s)")
  jq.add_argument("--steps", type=count, default=200, help="Adam steps (default: %(default)s)")
  jq.add_argument("--batch-size", type=count, default=8, help="examples per step (default: %(default)s)")
  jq.add_argument("--lr", type=positive_float, default=1e-2, help="learning rate (default: %(default)s)")
  jq.add_argument("--loss", choices=("mse", "kl"), default="mse", help="alignment loss (default: %(default)s)")
  jq.add_argument("--seed", type=seed, default=0, help="data and init seed (default: %(default)s)")
  jq.add_argument("--json", action="store_true", help="print one JSON object instead of text")
  jq.set_defaults(func=_cmd_judgeq)


@locks_out("judgeq")
def _cmd_judgeq(args) -> int:
  from jaxeff.training.judgeq import JudgeQConfig, make_training_data, train_judgeq

  config, params, tokenizer = load_model(args.model, "float32")
  jc = JudgeQConfig(
    n_soft=args.soft_tokens, steps=args.steps, batch_size=args.batch_size, lr=args.lr, loss=args.loss, seed=args.seed
  )
  prompts, responses = make_training_data(
    params,
    config,
    n_examples=args.examples,
    prompt_len=args.prompt_len,
    response_len=args.response_len,
    seed=args.seed,
    tokenizer=tokenizer,  # the model's own (code windows only when it is not jaxeff's byte tokenizer)
  )
  soft, hist, _ = train_judgeq(params, config, prompts, responses, jc)
  out = soft.save(args.out, model=args.model, loss_first=hist[0], loss_last=hist[-1], steps=args.steps)
  if args.json:
    print(
      json.dumps({"loss_first": float(hist[0]), "loss_last": float(hist[-1]), "steps": args.steps, "out": str(out)})
    )
    return 0
  print(f"alignment loss {hist[0]:.4g} -> {hist[-1]:.4g}; soft tokens saved to {out}")
  return 0
