"""`jaxeff codetrans`: TransCoder-test evaluation, SA data and two-stage training."""

from __future__ import annotations

import json

from jaxeff.cli.common import (
  add_unsafe_option,
  count,
  list_option,
  load_model,
  locks_out,
)


def register(sub) -> None:
  """Add the `codetrans` sub-command to ``sub``."""
  ct = sub.add_parser(
    "codetrans",
    help="code translation: evaluate on TransCoder-test, generate SA data, two-stage fine-tuning",
    description="evaluate: translate each problem of a direction with a model (or --gold: the harness self-check) and "
    "score by execution (computational accuracy, pass@k); augment: split program pairs (JSONL of src/tgt/src_lang/"
    "tgt_lang) into validated snippet pairs with a model as the LLM; train: two-stage fine-tuning on SA and PA pairs.",
  )
  ct.add_argument("action", choices=("evaluate", "augment", "train"), help="which stage to run")
  ct.add_argument("--data", help="evaluate: the evaluation_gfg folder (cpp/, java/, python/)")
  ct.add_argument(
    "--direction", default="python-cpp", help="evaluate: SRC-TGT, e.g. java-python (default: %(default)s)"
  )
  ct.add_argument("--gold", action="store_true", help="evaluate: use the target f_gold as the candidate (self-check)")
  ct.add_argument("--model", default="default", help="HF folder, 'default' or an embedded name (default: %(default)s)")
  ct.add_argument("--n", type=count, default=1, help="evaluate: samples per problem (default: %(default)s)")
  ct.add_argument(
    "--k", nargs="+", action=list_option(count), default=[1], help="evaluate: pass@k values (default: 1)"
  )
  ct.add_argument("--limit", type=count, default=None, help="evaluate: first N problems only")
  ct.add_argument("--pairs", help="augment: PA pairs JSONL; train: PA pairs JSONL")
  ct.add_argument("--sa", help="train: SA pairs JSONL (from augment)")
  ct.add_argument("--out", help="augment: SA JSONL to write; train: work folder")
  ct.add_argument("--order", default="sa,pa", help="train: stage order, 'sa,pa' or 'pa,sa' (default: %(default)s)")
  ct.add_argument("--steps", type=count, nargs=2, default=[200, 200], help="train: steps per stage (default: 200 200)")
  ct.add_argument("--seq-len", type=count, default=512, help="train: row length (default: %(default)s)")
  ct.add_argument(
    "--truncate",
    action="store_true",
    help="train: cut examples longer than a row on their target side (default: refuse them with an error)",
  )
  ct.add_argument("--cache", default=None, help="evaluate: verdict cache folder")
  add_unsafe_option(ct)
  ct.add_argument("--json", action="store_true", help="print one JSON object")
  ct.set_defaults(func=_cmd_codetrans)


@locks_out("codetrans", when=lambda a: a.action == "train")
def _cmd_codetrans(args) -> int:
  from jaxeff.codetrans import evaluate as ce

  if args.action == "evaluate":
    if not args.data:
      raise ValueError("codetrans evaluate needs --data (the evaluation_gfg folder)")
    src, _, tgt = args.direction.partition("-")
    probs = ce.load_transcoder(args.data, src, tgt)[: args.limit]
    if args.gold:
      gen = ce.gold_generator
    else:
      from jaxeff.codetrans.train import SamplerTranslator
      from jaxeff.generation import Sampler

      config, params, tok = load_model(args.model, "float32")
      gen = SamplerTranslator(Sampler(config, params), tok)
    rep = ce.evaluate(
      gen,
      probs,
      n=args.n,
      ks=args.k,
      cache_dir=args.cache,
      progress=not args.json,
      unsafe_no_isolation=args.unsafe_no_isolation,
    )
    if args.json:
      print(json.dumps(rep, indent=2))
    else:
      fails = [r["stem"] for r in rep["per_problem"] if r["c"] == 0]
      print(f"{rep['direction']}: {rep['problems']} problems, pass@k {rep['pass@k']}; failed: {fails[:20]}")
    return 0
  from jaxeff.io import check_output_folder, locked_file, read_jsonl

  pair = {"src": str, "tgt": str, "src_lang?": str, "tgt_lang?": str}
  if args.action == "augment":
    if not (args.pairs and args.out):
      raise ValueError("codetrans augment needs --pairs and --out")
    with locked_file(args.out, "codetrans"):
      return _augment(args, read_jsonl(args.pairs, pair, nonempty=True))
  if not (args.pairs and args.sa and args.out):
    raise ValueError("codetrans train needs --pairs (PA), --sa and --out")

  from jaxeff.codetrans.train import TwoStage, build_examples, train_two_stage
  from jaxeff.training.presets import PRESETS

  out = check_output_folder(args.out, "--out")
  full = {**pair, "src_lang": str, "tgt_lang": str}
  records = {name: read_jsonl(path, full, nonempty=True) for name, path in (("sa", args.sa), ("pa", args.pairs))}
  files = {}
  for name, rows in records.items():
    build_examples(rows, out / f"{name}.npz", seq_len=args.seq_len, truncate=args.truncate)
    files[name] = out / f"{name}.npz"
  import dataclasses

  base = dataclasses.replace(PRESETS["smoke"](), seq_len=args.seq_len, eval_every=0)
  if args.model != "default":
    from jaxeff.models.embedded import REFERENCE_MODELS, reference_model_path

    src = str(reference_model_path(args.model)) if args.model in REFERENCE_MODELS else args.model
    from jaxeff.models.hf_io import read_config

    base = dataclasses.replace(base, model=read_config(src), init_from=src)
  order = tuple(args.order.split(","))
  res = train_two_stage(files, base, TwoStage(order=order, stage_steps=tuple(args.steps)), out)
  print(f"stages {order}: final validation {[r.final_eval.get('loss') for r in res]}; weights in {res[-1].export_dir}")
  return 0


def _augment(args, pairs) -> int:
  from jaxeff.codetrans.augment import SAGenerator
  from jaxeff.generation import Sampler, SamplingParams
  from jaxeff.io import write_jsonl

  config, params, tok = load_model(args.model, "float32")
  sampler = Sampler(config, params)

  def llm(prompt: str) -> str:
    import jax

    ids = tok.encode(prompt)[-(config.max_position_embeddings - 512) :]
    r = sampler.generate([ids], SamplingParams(max_new_tokens=512, temperature=0.0), jax.random.key(0))
    return tok.decode(r.tokens[0, 0, : r.lengths[0, 0]])

  langs = (pairs[0].get("src_lang", "python"), pairs[0].get("tgt_lang", "cpp"))
  rep = SAGenerator(llm, src_lang=langs[0], tgt_lang=langs[1]).generate([(p["src"], p["tgt"]) for p in pairs])
  write_jsonl(args.out, rep.pairs)
  print(
    f"{len(rep.pairs)} SA pairs from {rep.responses} programs ({rep.unparsable} unparsable, rejected {rep.rejected}, {rep.duplicates} duplicates) -> {args.out}"
  )
  return 0
