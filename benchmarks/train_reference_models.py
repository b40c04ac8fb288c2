"""Train jaxeff's embedded reference models with jaxeff's own trainer (one command per model).

  python benchmarks/train_reference_models.py tiny-recall   # code + pass-key retrieval, needle probe
  python benchmarks/train_reference_models.py tiny-code     # stdlib code LM, 2048-token context

Each model trains in stages (a length curriculum: every stage is one ``train_and_evaluate`` run whose
``init_from`` is the previous stage's export), is probed, and is copied in bfloat16 with its tokenizer to
``jaxeff/assets/<name>/`` (an HF folder: config.json, model.safetensors, tokenizer.json). Training time and
final metrics are merged into ``benchmarks/results/training.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax.numpy as jnp  # noqa: E402

from benchmarks._common import merge_results  # noqa: E402

ASSETS = Path(__file__).resolve().parent.parent / "jaxeff" / "assets"


def _logged(workdir: Path) -> list[dict]:
  """The metrics an earlier invocation logged for a stage (when this one found it already finished)."""
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  return [json.loads(x) for x in lines if x.strip()] or [{}]


def stages(name: str):
  from jaxeff.training.presets import tiny_arith, tiny_code, tiny_moe, tiny_recall

  if name == "tiny-moe":
    return [tiny_moe()]
  if name == "tiny-arith":
    return [tiny_arith()]

  if name == "tiny-recall":
    base = tiny_recall()
    later = dict(lr=1e-3, warmup_steps=10, weights=(0.3, 0.7), eval_batches=2, log_every=10)
    # Retrieval is learned digit by digit (last digit first, measured); the long 512-token stage finishes it.
    return [
      base,
      dataclasses.replace(
        base, seq_len=512, batch_size=16, steps=300, passkey_rows=4800, eval_every=150, checkpoint_every=150, **later
      ),
      dataclasses.replace(
        base,
        seq_len=512,
        batch_size=16,
        steps=900,
        passkey_rows=14400,
        eval_every=300,
        checkpoint_every=300,
        **dict(later, weights=(0.2, 0.8)),
      ),
      dataclasses.replace(
        base, seq_len=1024, batch_size=8, steps=150, passkey_rows=1200, eval_every=75, checkpoint_every=75, **later
      ),
      dataclasses.replace(
        base, seq_len=4096, batch_size=2, steps=80, passkey_rows=160, eval_every=40, checkpoint_every=40, **later
      ),
      # More retrieval at 512 for the first digits, then the long context again.
      dataclasses.replace(
        base,
        seq_len=512,
        batch_size=16,
        steps=1200,
        passkey_rows=19200,
        eval_every=400,
        checkpoint_every=200,
        **dict(later, weights=(0.1, 0.9)),
      ),
      dataclasses.replace(
        base, seq_len=4096, batch_size=2, steps=60, passkey_rows=120, eval_every=30, checkpoint_every=30, **later
      ),
      # The first digit is learned last: one more retrieval-heavy 512 stage, then the long context once more.
      dataclasses.replace(
        base,
        seq_len=512,
        batch_size=16,
        steps=1000,
        passkey_rows=16000,
        eval_every=500,
        checkpoint_every=200,
        **dict(later, weights=(0.1, 0.9)),
      ),
      dataclasses.replace(
        base, seq_len=4096, batch_size=2, steps=60, passkey_rows=120, eval_every=30, checkpoint_every=30, **later
      ),
    ]
  if name == "tiny-code":
    base = tiny_code()
    return [
      base,
      dataclasses.replace(
        base,
        seq_len=2048,
        batch_size=4,
        steps=60,
        lr=1e-3,
        warmup_steps=10,
        eval_every=30,
        eval_batches=4,
        checkpoint_every=30,
        log_every=10,
      ),
    ]
  raise SystemExit(f"unknown reference model {name!r}")


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument(
    "name", choices=["tiny-recall", "tiny-code", "tiny-moe", "tiny-arith"], help="which reference model to train"
  )
  ap.add_argument("--workdir", default="runs/reference", help="where stage runs go (default: %(default)s)")
  args = ap.parse_args(argv)

  from jaxeff.models.hf_io import load_hf, save_hf
  from jaxeff.training import train_and_evaluate
  from jaxeff.training.data import save_byte_tokenizer
  from jaxeff.training.probes import needle_accuracy

  root = Path(args.workdir) / args.name
  prev = None
  record = {"stages": []}
  t_all = time.perf_counter()
  for k, cfg in enumerate(stages(args.name)):
    if prev is not None:
      cfg = dataclasses.replace(cfg, init_from=str(prev))
    t0 = time.perf_counter()
    res = train_and_evaluate(cfg, root / f"stage{k}")
    prev = res.export_dir
    record["stages"].append(
      {
        "seq_len": cfg.seq_len,
        "batch_size": cfg.batch_size,
        "steps": cfg.steps,
        "seconds": time.perf_counter() - t0,
        "final_eval": res.final_eval,
        "last_train_loss": (res.history or _logged(root / f"stage{k}"))[-1].get("loss"),
        "resumed_finished_run": not res.history,  # an earlier invocation trained this stage; seconds ~ 0
      }
    )
    print(f"stage {k}: {record['stages'][-1]}", flush=True)
  record["train_seconds"] = time.perf_counter() - t_all

  config, params = load_hf(prev, dtype=jnp.float32)
  record["params"] = config.param_count()
  record["val_bits_per_byte"] = record["stages"][-1]["final_eval"].get("bits_per_byte")
  if args.name == "tiny-recall":
    acc, digits = needle_accuracy(params, config, [256, 1024, 2048, 4096], n=40, return_per_digit=True)
    record["needle_accuracy"] = acc
    record["needle_digit_accuracy"] = digits
    print("needle accuracy:", acc, flush=True)

  dest = ASSETS / args.name
  if dest.exists():
    shutil.rmtree(dest)
  save_hf(dest, config, params, dtype=jnp.bfloat16)
  save_byte_tokenizer(dest)
  record["asset_bytes"] = sum(f.stat().st_size for f in dest.iterdir())
  (dest / "TRAINING.json").write_text(
    json.dumps(
      {"command": f"python benchmarks/train_reference_models.py {args.name}", **record}, indent=2, default=float
    )
  )

  targets = []
  if args.name == "tiny-recall":
    worst = min(record["needle_accuracy"].values())
    targets.append(
      {
        "name": "tiny-recall needle accuracy at every length up to 4096 (min)",
        "measured": worst,
        "target": 0.95,
        "met": bool(worst >= 0.95),
      }
    )
  targets.append(
    {
      "name": f"{args.name} asset size in bf16 (bytes)",
      "measured": record["asset_bytes"],
      "target": 10 * 2**20,
      "met": bool(record["asset_bytes"] <= 10 * 2**20),
    }
  )
  out = merge_results("training", {"reference_models": {args.name: record}}, targets)
  print("wrote", out, "and", dest)


if __name__ == "__main__":
  main()
