"""`jaxeff generate`: sample from a model through any prefill backend and cache."""

from __future__ import annotations

import json

from jaxeff.cli.common import (
  DTYPES,
  add_stack_options,
  build_stack,
  count,
  load_model,
  nonneg_float,
  nonneg_int,
  seed,
  unit_float,
)


def register(sub) -> None:
  """Add the `generate` sub-command to ``sub``."""
  gen = sub.add_parser(
    "generate",
    help="sample text from a local Hugging Face folder or the embedded default model",
    description="Sample continuations of one or more prompts with jaxeff's batched sampler "
    "(n samples per prompt share one prefill). Prints the text of every sample and an accounting line.",
  )
  gen.add_argument(
    "--model",
    default="default",
    help="a local HF folder (config.json + *.safetensors [+ tokenizer.json]), 'default' for the embedded "
    "model, an embedded reference model (tiny-code, tiny-recall, ...) or a fetched real model "
    "(smollm2-135m-instruct; `jaxeff models fetch`) (default: %(default)s). Nothing is downloaded.",
  )
  gen.add_argument(
    "--chat",
    action="store_true",
    help="wrap each --prompt as a user message in the model's chat template (instruct models, e.g. "
    "smollm2-135m-instruct) instead of tokenizing it as plain text",
  )
  gen.add_argument(
    "--prompt",
    action="append",
    default=None,
    help="prompt text; repeat the option for several prompts, run as one batch (default: 'def fibonacci(n):')",
  )
  gen.add_argument(
    "--prompt-ids",
    action="append",
    default=None,
    help="a prompt as comma-separated token ids (for folders without tokenizer.json); repeatable",
  )
  gen.add_argument(
    "--max-new-tokens", type=count, default=48, help="tokens to generate per sample (default: %(default)s)"
  )
  gen.add_argument(
    "--temperature", type=nonneg_float, default=0.8, help="softmax temperature; 0 means greedy (default: %(default)s)"
  )
  gen.add_argument(
    "--top-k", type=nonneg_int, default=0, help="keep only the k most likely tokens; 0 = off (default: %(default)s)"
  )
  gen.add_argument(
    "--top-p", type=unit_float, default=0.95, help="nucleus sampling mass in (0, 1]; 1 = off (default: %(default)s)"
  )
  gen.add_argument("--n-samples", type=count, default=1, help="samples per prompt (default: %(default)s)")
  gen.add_argument(
    "--seed", type=seed, default=0, help="PRNG seed; equal seeds give equal samples (default: %(default)s)"
  )
  gen.add_argument("--dtype", choices=DTYPES, default="float32", help="parameter dtype (default: %(default)s)")
  gen.add_argument(
    "--no-stop", action="store_true", help="ignore the model's EOS token(s) and always generate --max-new-tokens"
  )
  gen.add_argument(
    "--prompt-file",
    action="append",
    default=None,
    help="read a prompt's text from this file (UTF-8); repeatable, joins the --prompt prompts in one batch",
  )
  gen.add_argument(
    "--context",
    default=None,
    help="compress-then-ask mode: prefill this text file through the stack's cache (e.g. --kv-press snapkv "
    "--kv-budget 0.1) before any question is seen, then answer each --question through the compressed cache "
    "(greedy); prints the answers and the cache's bytes",
  )
  gen.add_argument(
    "--question",
    action="append",
    default=None,
    help="with --context: a question appended after the compressed context; repeatable (one compression serves "
    "them all)",
  )
  add_stack_options(gen)
  gen.add_argument("--json", action="store_true", help="print one JSON object instead of text")
  gen.set_defaults(func=_cmd_generate)


def _cmd_generate(args) -> int:
  import jax

  from jaxeff.generation import SamplingParams
  from jaxeff.io import read_text

  if (args.context is None) != (args.question is None):
    raise ValueError("--context and --question go together (compress the context, then ask)")
  if args.context is not None and (args.prompt or args.prompt_ids or args.prompt_file):
    raise ValueError("--context mode answers --question; --prompt / --prompt-ids / --prompt-file do not apply")
  file_texts = [read_text(f, "--prompt-file") for f in args.prompt_file or []]
  context_text = read_text(args.context, "--context file") if args.context is not None else None
  config, params, tokenizer = load_model(args.model, args.dtype)
  if context_text is not None:
    return _compress_then_ask(args, config, params, tokenizer, context_text)
  prompts: list[list[int]] = []
  texts = (args.prompt or []) + file_texts
  if not texts and not args.prompt_ids:
    texts = ["def fibonacci(n):"]
  if texts:
    if tokenizer is None:
      raise ValueError(f"{args.model} has no tokenizer.json; pass --prompt-ids instead of --prompt")
    if args.chat:
      prompts += [tokenizer.apply_chat_template([{"role": "user", "content": t}]) for t in texts]
    else:
      prompts += [tokenizer.encode(t) for t in texts]
  for spec in args.prompt_ids or []:
    try:
      prompts.append([int(x) for x in spec.split(",") if x.strip()])
    except ValueError:
      raise ValueError(f"--prompt-ids expects comma-separated integers, got {spec!r}") from None
  stop = () if args.no_stop else config.stop_token_ids
  sp = SamplingParams(
    max_new_tokens=args.max_new_tokens,
    temperature=args.temperature,
    top_k=args.top_k,
    top_p=args.top_p,
    n_samples=args.n_samples,
    stop_tokens=stop,
    pad_id=config.pad_token_id or 0,
  )
  sampler = build_stack(args, config).sampler(config, params)
  result = sampler.generate(prompts, sp, jax.random.key(args.seed))
  seqs = result.sequences()
  decode = (lambda ids: tokenizer.decode(ids)) if tokenizer is not None else (lambda ids: " ".join(map(str, ids)))
  a = result.accounting
  if args.json:
    out = {
      "samples": [[decode(s) for s in row] for row in seqs],
      "token_ids": seqs,
      "accounting": {
        "prompt_tokens": a.prompt_tokens,
        "generated_tokens": a.generated_tokens,
        "prefill_s": a.prefill_s,
        "decode_s": a.decode_s,
        "compile_s": a.compile_s,
        "decode_calls": a.decode_calls,
        "cache_bytes": a.cache_bytes,
      },
    }
    print(json.dumps(out))
    return 0
  for b, row in enumerate(seqs):
    prompt_text = texts[b] if b < len(texts) else str(prompts[b])
    head = prompt_text if len(prompt_text) <= 80 else f"{prompt_text[:60]}... ({len(prompt_text):,} characters)"
    for s, ids in enumerate(row):
      print(f"--- prompt {b} sample {s}: {head!r}")
      print(decode(ids))
  print(
    f"[{a.prompt_tokens} prompt + {a.generated_tokens} generated tokens | prefill {a.prefill_s * 1e3:.1f} ms, "
    f"decode {a.decode_s * 1e3:.1f} ms ({a.decode_tokens_per_s:.0f} tok/s), compile {a.compile_s:.1f} s; "
    f"cache after prefill {a.cache_bytes:,} bytes]"
  )
  return 0


def _compress_then_ask(args, config, params, tokenizer, context_text: str) -> int:
  """``--context`` / ``--question``: ``compress_context`` once with the stack's cache, ``answer`` each question."""
  from jaxeff.generation import answer, compress_context

  if tokenizer is None:
    raise ValueError(f"{args.model} has no tokenizer.json; --context needs one")
  context = tokenizer.encode(context_text)
  questions = [tokenizer.encode(q) for q in args.question]
  room = max(len(q) for q in questions) + args.max_new_tokens
  stack = build_stack(args, config)
  p, factory = stack.prepare(config, params)
  ctx = compress_context(p, context, config=config, press=factory, room=room, attention=stack.attention)
  stop = () if args.no_stop else config.stop_token_ids
  answers = [answer(p, ctx, q, max_new_tokens=args.max_new_tokens, stop_tokens=stop) for q in questions]
  texts = [tokenizer.decode(a) for a in answers]
  if args.json:
    out = {
      "answers": texts,
      "token_ids": answers,
      "context_tokens": ctx.length,
      "cache_bytes": ctx.nbytes,
      "full_cache_bytes": ctx.full_nbytes,
      "stack": stack.describe(),
    }
    print(json.dumps(out))
    return 0
  for q, t in zip(args.question, texts):
    print(f"--- {q}")
    print(t)
  print(
    f"[context {ctx.length} tokens through {stack.describe()}: cache {ctx.nbytes:,} bytes "
    f"({ctx.nbytes / ctx.full_nbytes:.1%} of a full float32 cache of the same capacity)]"
  )
  return 0
