"""`jaxeff train` and `jaxeff corpora`: training runs and the offline corpora they read."""

from __future__ import annotations

import json


def register_train(sub) -> None:
  """Add the `train` sub-command to ``sub``."""
  tr = sub.add_parser(
    "train",
    help="train (or resume) a model with jaxeff's trainer",
    description="Train a model from a config (YAML/JSON file or preset:NAME) with key=value overrides, e.g. "
    "`jaxeff train --config preset:smoke --out runs/smoke steps=50 model.d_model=96`. Re-running the same "
    "command with the same --out resumes from the last checkpoint. The final model is exported in HF format to "
    "WORKDIR/export.",
  )
  tr.add_argument("--config", required=True, help="a YAML/JSON file, or preset:NAME (smoke, tiny-code, tiny-recall)")
  tr.add_argument(
    "--out",
    "--workdir",
    dest="out",
    required=True,
    help="run folder: checkpoints/, metrics.jsonl, config.json, export/ (--workdir: the old name, still accepted)",
  )
  tr.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. lr=1e-3 model.n_layers=4")
  tr.add_argument(
    "--no-progress", action="store_true", help="hide the progress bar (metrics still go to metrics.jsonl)"
  )
  tr.add_argument(
    "--print-config", action="store_true", help="print the resolved config as JSON and exit without training"
  )
  tr.add_argument("--json", action="store_true", help="print one JSON object instead of text (and no progress bar)")
  tr.set_defaults(func=_cmd_train)


def register_corpora(sub) -> None:
  """Add the `corpora` sub-command to ``sub``."""
  co = sub.add_parser(
    "corpora",
    help="show (or install) the offline corpora jaxeff trains on",
    description="Report which offline corpora are available (Python stdlib sources, Debian dict-gcide).",
  )
  co.add_argument(
    "--install", action="store_true", help="apt-get install the missing Debian corpus packages (needs root)"
  )
  co.add_argument("--json", action="store_true", help="print one JSON object instead of text")
  co.set_defaults(func=_cmd_corpora)


def _cmd_train(args) -> int:

  from jaxeff.training.trainer import load_train_config, train_and_evaluate

  config = load_train_config(args.config, args.overrides)
  if args.print_config:
    print(json.dumps(config.to_dict(), indent=2))
    return 0
  result = train_and_evaluate(config, args.out, progress=not args.no_progress and not args.json)
  ev = result.final_eval
  if args.json:
    out = {"steps": config.steps, "train_seconds": result.train_seconds, "final_eval": ev}
    print(json.dumps({**out, "export_dir": str(result.export_dir)}, default=float))
    return 0
  print(
    f"done: {config.steps} steps in {result.train_seconds:.1f} s | val loss {ev['loss']:.4f}"
    + (f", bits/byte {ev['bits_per_byte']:.4f}" if "bits_per_byte" in ev else "")
    + f" | exported to {result.export_dir}"
  )

  return 0


def _cmd_corpora(args) -> int:
  import subprocess

  from jaxeff.training import data as data_lib

  ok = data_lib.GCIDE_PATH.is_file()
  if args.install and not ok:
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "dict-gcide"], check=True)
    ok = data_lib.GCIDE_PATH.is_file()
  n_py = len(data_lib.python_stdlib_files("all"))
  if args.json:
    print(json.dumps({"python_files": n_py, "gcide": ok, "gcide_path": str(data_lib.GCIDE_PATH)}))
    return 0 if ok else 1
  print(f"python (stdlib sources): {n_py} files")
  print(f"gcide (Debian dict-gcide): {'installed' if ok else 'missing: jaxeff corpora --install'}")
  return 0 if ok else 1
