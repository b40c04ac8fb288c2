"""The jaxeff CLI: --help explains every option, generate/inspect run, bad input gives one line and exit 2."""

import argparse
import json

import jax
import numpy as np
import pytest

from jaxeff import cli
from jaxeff.config import ModelConfig
from jaxeff.models import init_params, save_hf


def _options(sub):
  parser = cli.build_parser()
  action = next(a for a in parser._actions if a.dest == "command")
  return action.choices[sub]._actions


@pytest.mark.parametrize(
  "sub",
  [
    "tour",
    "generate",
    "inspect",
    "bench",
    "judgeq",
    "camera",
    "seersc",
    "sweep",
    "fit",
    "tcbench",
    "theory",
    "codetrans",
    "models",
    "eval",
  ],
)
def test_every_option_has_help(sub):
  for action in _options(sub):
    assert action.help and len(action.help) > 10, action.dest


def test_help_exits_zero(capsys):
  assert cli.main(["generate", "--help"]) == 0
  assert "--max-new-tokens" in capsys.readouterr().out


def test_generate_default_model_json(capsys):
  assert (
    cli.main(
      [
        "generate",
        "--max-new-tokens",
        "5",
        "--n-samples",
        "2",
        "--prompt",
        "ab",
        "--prompt",
        "c",
        "--json",
        "--no-stop",
      ]
    )
    == 0
  )
  out = json.loads(capsys.readouterr().out)
  assert len(out["samples"]) == 2 and len(out["samples"][0]) == 2
  assert all(len(ids) == 5 for row in out["token_ids"] for ids in row)
  assert out["accounting"]["generated_tokens"] == 20


def test_generate_from_folder_with_prompt_ids(tmp_path, capsys):
  cfg = ModelConfig.tiny()
  save_hf(tmp_path, cfg, init_params(cfg, jax.random.key(0)))
  assert (
    cli.main(
      ["generate", "--model", str(tmp_path), "--prompt-ids", "1,2,3", "--max-new-tokens", "3", "--temperature", "0"]
    )
    == 0
  )
  assert "generated tokens" in capsys.readouterr().out
  assert cli.main(["generate", "--model", str(tmp_path), "--prompt", "hello"]) == 2
  assert "no tokenizer.json" in capsys.readouterr().err


def test_inspect_preset_and_folder(tmp_path, capsys):
  assert cli.main(["inspect", "--preset", "qwen2.5-7b", "--json"]) == 0
  info = json.loads(capsys.readouterr().out)
  assert info["params_total"] == 7_615_616_512
  assert info["kv_cache_bytes_per_token"] == 2 * 28 * 4 * 128 * 2


@pytest.mark.parametrize(
  "argv, needle",
  [
    (["generate", "--model", "/does/not/exist"], "checkpoint folder not found"),
    (["generate", "--prompt", "x" * 5000], "exceeds the model's maximum"),
    (["generate", "--top-p", "1.5"], "--top-p: must be in (0, 1], got 1.5"),
    (["generate", "--temperature", "nan"], "--temperature: expected a finite number"),
    (["generate", "--seed", str(2**40)], "--seed: must be in [0, 2**32)"),
    (["generate", "--max-new-tokens", "abc"], "--max-new-tokens: expected an integer, got 'abc'"),
    (["eval", "corpus", "--batches", "0"], "--batches: must be >= 1, got 0"),
    (["codetrans", "evaluate", "--limit", "-1"], "--limit: must be >= 1, got -1"),
    (["camera", "analyze", "--ratio", "1.5"], "--ratio: must be in [0, 1]"),
    (["generate", "--no-such-flag"], "unrecognized arguments"),
    (["generate", "--prompt-ids", "1,a"], "comma-separated integers"),
    (["inspect", "--preset", "gpt-5"], "unknown preset"),
  ],
)
def test_bad_input_one_line_exit_2(argv, needle, capsys):
  assert cli.main(argv) == 2
  err = capsys.readouterr().err.strip()
  assert err.count("\n") == 0 and needle in err and "Traceback" not in err


def test_unsupported_architecture_folder(tmp_path, capsys):
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt_neox"}))
  assert cli.main(["inspect", "--model", str(tmp_path)]) == 2
  assert "unsupported architecture model_type='gpt_neox'" in capsys.readouterr().err


def test_train_then_eval_cli(tmp_path, capsys):
  wd = tmp_path / "run"
  argv = [
    "train",
    "--config",
    "preset:smoke",
    "--workdir",
    str(wd),
    "--no-progress",
    "steps=6",
    "checkpoint_every=3",
    "eval_every=6",
    "max_documents=10",
    "seq_len=32",
  ]
  assert cli.main(argv) == 0
  assert "exported to" in capsys.readouterr().out
  assert (wd / "export" / "model.safetensors").is_file() and (wd / "metrics.jsonl").is_file()
  assert (wd / "export" / "tokenizer.json").is_file()  # byte runs export the byte tokenizer in HF format
  assert cli.main(["eval", "--model", str(wd / "export"), "--seq-len", "32", "--batches", "2", "--json"]) == 0
  ev = json.loads(capsys.readouterr().out)
  assert ev["bits_per_byte"] > 0 and ev["perplexity"] > 1


@pytest.mark.parametrize(
  "argv, needle",
  [
    (["train", "--config", "preset:nope", "--workdir", "x"], "unknown training preset"),
    (["train", "--config", "preset:smoke", "--workdir", "x", "lr=-1"], "lr must be > 0"),
    (["train", "--config", "preset:smoke", "--workdir", "x", "learning_rate=1"], "unknown config key"),
    (["train", "--config", "/no/such.yaml", "--workdir", "x"], "not found"),
  ],
)
def test_train_bad_input(argv, needle, capsys, tmp_path):
  argv = [a if a != "x" else str(tmp_path / "wd") for a in argv]
  assert cli.main(argv) == 2
  assert needle in capsys.readouterr().err
  assert not (tmp_path / "wd").exists()  # failed before any work


def test_generate_with_proxy_prefill_equals_dense_at_full_budget(capsys):
  """ProxyAttn prefill through the CLI: with a min budget above the prompt length it is exact, so greedy
  generations equal dense ones; a sparse setting runs too."""
  prompt = "def f(x):\n    return x + 1\n" * 12
  common = ["generate", "--prompt", prompt, "--temperature", "0", "--max-new-tokens", "8", "--json", "--no-stop"]
  outs = {}
  for name, extra in [
    ("dense", []),
    ("full", ["--prefill-attention", "proxy", "--block-size", "64", "--min-budget-tokens", "4096"]),
    ("sparse", ["--prefill-attention", "proxy", "--block-size", "32", "--min-budget-tokens", "32", "--gamma", "0.5"]),
  ]:
    assert cli.main(common + extra) == 0
    outs[name] = json.loads(capsys.readouterr().out)["token_ids"]
  assert outs["full"] == outs["dense"]
  assert len(outs["sparse"][0][0]) == 8


def test_bench_attention_json(capsys):
  argv = ["bench", "attention", "--lengths", "512", "--head-dim", "32", "--block-size", "64"]
  argv += ["--min-budget-tokens", "128", "--repeats", "1", "--json"]
  assert cli.main(argv) == 0
  rows = json.loads(capsys.readouterr().out)
  assert {r["method"] for r in rows} == {"dense", "proxy", "xattention", "flexprefill"}
  proxy = next(r for r in rows if r["method"] == "proxy")
  assert 0 < proxy["density"] <= 1 and proxy["recall"] <= 1.0 + 1e-6 and proxy["rel_error"] >= 0


def test_generate_with_compressed_kv_caches(capsys):
  """--kv-cache: full-rank CommonKV reproduces the full cache's greedy tokens; int4, low rank, quantized
  latents and merging run."""
  common = ["generate", "--prompt", "import os\ndef main():", "--temperature", "0", "--max-new-tokens", "6"]
  common += ["--json", "--no-stop"]
  outs = {}
  for name, extra in [
    ("full", []),
    ("ckv_full_rank", ["--kv-cache", "commonkv", "--kv-rank", "128"]),
    ("int4", ["--kv-cache", "int4"]),
    ("ckv_low", ["--kv-cache", "commonkv", "--kv-rank", "32", "--kv-bits", "4", "--kv-merge-rho", "0.3"]),
    # selective reconstruction with more tiles than the prompt has: every key, so the full-rank tokens again
    ("ckv_select", ["--kv-cache", "commonkv", "--kv-rank", "128", "--kv-select-tiles", "64"]),
  ]:
    assert cli.main(common + extra) == 0, name
    outs[name] = json.loads(capsys.readouterr().out)["token_ids"]
  assert outs["ckv_full_rank"] == outs["full"] == outs["ckv_select"]
  assert all(len(v[0][0]) == 6 for v in outs.values())


def test_judgeq_train_then_generate_with_presses(tmp_path, capsys):
  """`jaxeff judgeq train` writes soft tokens; `generate --kv-press` at full budget equals the full cache and
  runs at a real budget for every press; bad press input fails with one line."""
  out = tmp_path / "jq"
  argv = ["judgeq", "train", "--model", "tiny-recall", "--out", str(out), "--soft-tokens", "4", "--examples", "4"]
  argv += ["--prompt-len", "96", "--steps", "3", "--batch-size", "4"]
  assert cli.main(argv) == 0
  assert "soft tokens saved" in capsys.readouterr().out
  assert (out / "soft_emb.npy").is_file() and json.loads((out / "judgeq.json").read_text())["n_soft"] == 4
  common = ["generate", "--model", "tiny-recall", "--prompt", "import os\n" * 8, "--temperature", "0"]
  common += ["--max-new-tokens", "5", "--json", "--no-stop"]
  assert cli.main(common) == 0
  full = json.loads(capsys.readouterr().out)["token_ids"]
  assert cli.main(common + ["--kv-press", "judgeq", "--judgeq", str(out), "--kv-budget", "1.0"]) == 0
  assert json.loads(capsys.readouterr().out)["token_ids"] == full
  for press in ["snapkv", "pyramidkv", "h2o", "streaming"]:
    assert cli.main(common + ["--kv-press", press, "--kv-budget", "0.3"]) == 0, press
    assert len(json.loads(capsys.readouterr().out)["token_ids"][0][0]) == 5
  assert cli.main(common + ["--kv-press", "snapkv", "--kv-budget", "20"]) == 0  # 20 tokens
  capsys.readouterr()
  # the whole stack in one call: ProxyAttn prefill + CommonKV latents + Judge Q + int4
  stack = ["--prefill-attention", "proxy", "--block-size", "16", "--min-budget-tokens", "16", "--kv-cache"]
  stack += ["commonkv", "--kv-bits", "4", "--kv-press", "judgeq", "--judgeq", str(out), "--kv-budget", "0.5"]
  assert cli.main(common + stack) == 0
  assert len(json.loads(capsys.readouterr().out)["token_ids"][0][0]) == 5
  assert cli.main(common + ["--kv-press", "judgeq"]) == 2
  assert "--judgeq" in capsys.readouterr().err
  assert cli.main(common + ["--kv-press", "snapkv", "--kv-budget", "0"]) == 2
  assert "(0, 1]" in capsys.readouterr().err


def test_camera_analyze_prune_quantize(tmp_path, capsys):
  from jaxeff.models import load_hf

  cfg = ModelConfig.tiny(
    model_type="qwen2_moe", qkv_bias=True, n_experts=4, experts_per_token=2, d_expert=16, d_shared=16, shared_gate=True
  )
  save_hf(tmp_path / "moe", cfg, init_params(cfg, jax.random.key(0), std=0.2))
  common = ["--model", str(tmp_path / "moe"), "--calib-windows", "2", "--calib-len", "64", "--json"]
  assert cli.main(["camera", "analyze", *common]) == 0
  info = json.loads(capsys.readouterr().out)
  assert info["layers"]["0"]["micro_experts"] == 4 * 16 + 16
  assert cli.main(["camera", "prune", *common, "--ratio", "0.5", "--out", str(tmp_path / "p"), "--compact"]) == 0
  info = json.loads(capsys.readouterr().out)
  assert info["compact_moe_param_bytes"] < info["moe_param_bytes"]
  assert info["compact_channels"]["0"] == 80 - 40  # the kept micro-experts of layer 0
  _, pruned = load_hf(tmp_path / "p")
  gate = np.asarray(pruned["layers"][0]["mlp"]["gate"])
  zero_rows = (np.abs(gate).sum(-1) == 0).sum()
  shared_zero = (np.abs(np.asarray(pruned["layers"][0]["mlp"]["shared"]["gate"])).sum(-1) == 0).sum()
  assert zero_rows + shared_zero == 40  # floor(80 * 0.5) micro-experts pruned in layer 0
  assert cli.main(["camera", "quantize", *common, "--out", str(tmp_path / "q"), "--quantizer", "rtn"]) == 0
  assert json.loads(capsys.readouterr().out)["mean_bits"] == pytest.approx(2.25)
  assert cli.main(["camera", "prune", *common, "--ratio", "1.5", "--out", str(tmp_path / "x")]) == 2
  assert "[0, 1]" in capsys.readouterr().err
  assert cli.main(["camera", "quantize", *common, "--bits", "3", "2", "--bit-ratios", "0.5", "0.6"]) == 2
  assert "sum to 1" in capsys.readouterr().err


def test_seersc_cli_runs_methods_and_rejects_bad_input(tmp_path, capsys):
  argv = ["seersc", "--n-problems", "6", "--max-samples", "4", "--m", "8", "--method", "seersc", "--method", "asc"]
  assert cli.main([*argv, "--json"]) == 0
  out = json.loads(capsys.readouterr().out)
  assert set(out) == {"SeerSC@4", "ASC@4"}
  assert out["SeerSC@4"]["queries"] == 6 and out["SeerSC@4"]["s1_tokens"] == 6 * 8  # one token per System-1 answer
  assert out["ASC@4"]["s1_tokens"] == 0 and 0.0 <= out["ASC@4"]["accuracy"] <= 1.0
  data = tmp_path / "q.jsonl"
  data.write_text('{"prompt": "a1b2=", "answer": "3"}\n{"answer": "1"}\n')
  for bad, needle in [
    (["seersc", "--max-samples", "0"], "must be >= 1"),
    (["seersc", "--thresholds", "2", "1"], "thresholds"),
    (["seersc", "--data", str(tmp_path / "missing.jsonl")], "JSONL file not found"),
    (["seersc", "--data", str(data)], "q.jsonl:2"),
  ]:
    assert cli.main(bad) == 2
    assert needle in capsys.readouterr().err


def test_models_list_and_unfetched_model_error(tmp_path, capsys, monkeypatch):
  monkeypatch.setenv("JAXEFF_CACHE", str(tmp_path))
  assert cli.main(["models", "list"]) == 0
  assert "smollm2-135m-instruct" in capsys.readouterr().out
  assert cli.main(["generate", "--model", "smollm2-135m-instruct", "--chat", "--prompt", "hi"]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "jaxeff models fetch smollm2-135m-instruct" in err
  assert cli.main(["models", "fetch"]) == 2
  assert cli.main(["models", "fetch", "no-such-model"]) == 2


def test_eval_long_runs_the_harness_and_rejects_bad_input(capsys, tmp_path):
  argv = ["eval", "long", "--model", "tiny-recall", "--tasks", "niah_single", "--lengths", "512", "--n", "2"]
  png = tmp_path / "scores.png"
  extra = ["--json", "--kv-press", "snapkv", "--kv-budget", "0.2", "--protocol", "agnostic", "--plot", str(png)]
  assert cli.main(argv + extra) == 0
  assert png.stat().st_size > 1000
  out = json.loads(capsys.readouterr().out)
  (row,) = out["summary"]
  assert out["protocol"] == "agnostic" and row["n"] == 2 and row["length"] == 512 and 0 <= row["score"] <= 100
  assert cli.main(argv[:5] + ["nope"] + argv[6:]) == 2
  assert "unknown tasks" in capsys.readouterr().err
  assert cli.main(argv[:7] + ["100000"] + argv[8:]) == 2
  assert "--lengths" in capsys.readouterr().err


def test_an_unexpected_exception_is_one_line_and_a_saved_traceback(monkeypatch, capsys):
  from jaxeff.cli import generate

  def boom(args):
    raise KeyError("surprise")

  monkeypatch.setattr(generate, "_cmd_generate", boom)
  assert cli.main(["generate", "--prompt", "x"]) == 1
  err = capsys.readouterr().err.strip()
  assert err.count("\n") == 0 and "unexpected KeyError" in err and "Traceback" not in err
  path = err.rsplit("traceback: ", 1)[1].rstrip(")")
  assert "KeyError: 'surprise'" in open(path).read()


def test_a_second_writer_of_an_output_folder_fails_at_once(tmp_path, capsys):
  """The locks are held by another process (a child sleeping with them): every command that writes an output
  folder or file (train, sweep, camera, judgeq, theory, tour, codetrans train / augment, tcbench build / select)
  refuses before any work, naming the holder's PID."""
  import subprocess
  import sys
  import time

  from jaxeff.training import train_and_evaluate
  from jaxeff.training.presets import smoke
  from tests.bad_inputs import PAIR, PROBLEM

  out = tmp_path / "out"
  (tmp_path / "p.jsonl").write_text(json.dumps(PAIR) + "\n")
  (tmp_path / "problems.jsonl").write_text(json.dumps(PROBLEM) + "\n")
  names = [".jaxeff.lock", ".m.jsonl.lock", ".s.jsonl.lock", ".sa.jsonl.lock", ".results.csv.lock"]
  holder = subprocess.Popen(
    [
      sys.executable,
      "-c",
      "import contextlib, time\nfrom jaxeff.io import locked_folder\nwith contextlib.ExitStack() as st:\n"
      f"  for n in {names!r}: st.enter_context(locked_folder({str(out)!r}, name=n))\n"
      "  print('held', flush=True)\n  time.sleep(120)",
    ],
    stdout=subprocess.PIPE,
    text=True,
  )
  commands = [
    ["judgeq", "train", "--out", str(out)],
    ["tour", "--out", str(out)],
    ["theory", "run", "E1", "--out", str(out), "--small"],
    ["camera", "prune", "--out", str(out)],
    ["codetrans", "train", "--pairs", str(tmp_path / "p.jsonl"), "--sa", str(tmp_path / "p.jsonl"), "--out", str(out)],
    ["codetrans", "augment", "--pairs", str(tmp_path / "p.jsonl"), "--out", str(out / "sa.jsonl")],
    ["tcbench", "build", "--problems", str(tmp_path / "problems.jsonl"), "--matrices", str(out / "m.jsonl")],
    ["tcbench", "select", "--matrices", str(tmp_path / "m.jsonl"), "--selections", str(out / "s.jsonl")],
    ["sweep", "--workdir", str(out), "--sizes", "32x2", "--tokens", "1000"],
    ["train", "--config", "preset:smoke", "--workdir", str(out), "--no-progress"],
  ]
  try:
    assert holder.stdout.readline().strip() == "held"
    for argv in commands:
      t0 = time.perf_counter()
      assert cli.main(argv) == 2, argv
      err = capsys.readouterr().err.strip()
      assert f"PID {holder.pid}" in err and err.count("\n") == 0, (argv, err)
      assert time.perf_counter() - t0 < 15, argv  # refused at once, no work done
    with pytest.raises(Exception, match=f"PID {holder.pid}"):
      train_and_evaluate(smoke(), out, progress=False)
  finally:
    holder.kill()
    holder.wait()


@pytest.mark.parametrize(
  "argv", [["tour", "--quick", "--out", "{tmp}/t"], ["fit", "--results", "{tmp}/r.csv", "--plot", "{tmp}/f.png"]]
)
def test_missing_matplotlib_is_one_line_before_any_work(tmp_path, monkeypatch, capsys, argv):
  """Without matplotlib, the commands that draw say what to install in one line (exit 2) and write nothing."""
  import sys

  (tmp_path / "r.csv").write_text("N,D,L\n1,1,1\n")
  monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
  monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
  assert cli.main([a.format(tmp=tmp_path) for a in argv]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "pip install 'jaxeff[plot]'" in err, err
  assert not (tmp_path / "t" / "report.html").exists() and not (tmp_path / "f.png").exists()


def test_generate_compress_then_ask_reports_cache_bytes(tmp_path, capsys):
  """--context / --question: one compression, several answers, the cache bytes (smaller under a press)."""
  ctx = tmp_path / "ctx.txt"
  ctx.write_text("the pass key is 73105. remember it. " * 8)
  base = ["generate", "--model", "tiny-recall", "--context", str(ctx), "--max-new-tokens", "6", "--json"]
  qs = ["--question", " the pass key is", "--question", " remember"]
  assert cli.main(base + qs) == 0
  full = json.loads(capsys.readouterr().out)
  assert len(full["answers"]) == 2 and full["cache_bytes"] == full["full_cache_bytes"] > 0
  assert cli.main(base + qs + ["--kv-press", "snapkv", "--kv-budget", "0.25"]) == 0
  pressed = json.loads(capsys.readouterr().out)
  assert pressed["cache_bytes"] < full["cache_bytes"] and "snapkv" in pressed["stack"]
  assert cli.main(["generate", "--model", "tiny-recall", "--context", str(ctx)]) == 2  # no question
  assert "go together" in capsys.readouterr().err
  prompt = tmp_path / "p.txt"
  prompt.write_text("def add(a, b):")
  assert cli.main(["generate", "--prompt-file", str(prompt), "--max-new-tokens", "3", "--json"]) == 0
  assert len(json.loads(capsys.readouterr().out)["samples"]) == 1


def test_generate_header_does_not_echo_a_long_prompt_and_reports_cache_bytes(tmp_path, capsys):
  prompt = tmp_path / "long.txt"
  prompt.write_text("x = 1\n" * 300)
  assert cli.main(["generate", "--prompt-file", str(prompt), "--max-new-tokens", "2"]) == 0
  out = capsys.readouterr().out
  header = next(line for line in out.splitlines() if line.startswith("--- prompt 0"))
  assert len(header) < 120 and "1,800 characters" in header
  assert "cache after prefill" in out
  assert cli.main(["generate", "--prompt-file", str(prompt), "--max-new-tokens", "2", "--json"]) == 0
  assert json.loads(capsys.readouterr().out)["accounting"]["cache_bytes"] > 0


def test_every_command_has_json_and_shows_defaults():
  parser = cli.build_parser()
  action = next(a for a in parser._actions if a.dest == "command")
  for name, sub in action.choices.items():
    opts = {o for a in sub._actions for o in a.option_strings}
    assert "--json" in opts, f"jaxeff {name} has no --json"
    for a in sub._actions:  # an option with a real default says it in --help
      if a.option_strings and a.default not in (None, False, argparse.SUPPRESS) and a.dest != "help":
        assert "default" in (a.help or "").lower(), f"jaxeff {name} {a.option_strings[0]}: default not shown"


def test_json_of_the_quick_commands(tmp_path, capsys):
  assert cli.main(["corpora", "--json"]) in (0, 1)
  assert json.loads(capsys.readouterr().out)["python_files"] > 100
  assert cli.main(["models", "list", "--json"]) == 0
  assert "smollm2-135m-instruct" in {m["name"] for m in json.loads(capsys.readouterr().out)["models"]}
  assert (
    cli.main(["sweep", "--out", str(tmp_path / "s"), "--sizes", "32x2", "--tokens", "1000", "--dry-run", "--json"])
    == 0
  )
  (point,) = json.loads(capsys.readouterr().out)["points"]
  assert point["D"] == 1000 and point["C"] == 6 * point["N"] * 1000
  assert cli.main(["theory", "run", "E1", "--small", "--out", str(tmp_path / "t"), "--json"]) == 0
  assert "E1" in json.loads(capsys.readouterr().out)["experiments"]


def test_fit_reads_the_users_column_names_and_defaults_budgets_to_the_data(tmp_path, capsys):
  rows = ["params,tokens,val_loss"]
  for n in (1e6, 3e6, 1e7, 3e7, 1e8):
    for d in (1e8, 3e8, 1e9, 3e9, 1e10, 3e10):
      rows.append(f"{n},{d},{1.7 + 400 / n**0.34 + 410 / d**0.28}")
  (tmp_path / "runs.csv").write_text("\n".join(rows) + "\n")
  argv = ["fit", "--results", str(tmp_path / "runs.csv"), "--columns", "params,tokens,val_loss", "--json"]
  assert cli.main(argv) == 0
  out = json.loads(capsys.readouterr().out)
  assert out["mean_relative_error"] < 1e-3
  budgets = sorted(a["C"] for a in out["allocation"])
  assert budgets[0] == 6 * 1e6 * 1e8 and budgets[-1] == 10 * 6 * 1e8 * 3e10
  assert cli.main(["fit", "--results", str(tmp_path / "runs.csv")]) == 2  # default names are absent: one line
  assert "missing columns" in capsys.readouterr().err


@pytest.mark.parametrize(
  "argv, dest",
  [
    (["bench", "attention", "--lengths", "{a}"], "lengths"),
    (["bench", "attention", "--methods", "{m}"], "methods"),
    (["camera", "quantize", "--bits", "{a}"], "bits"),
    (["eval", "long", "--lengths", "{a}"], "lengths"),
    (["sweep", "--out", "x", "--sizes", "{s}"], "sizes"),
    (["fit", "--results", "{r}"], "results"),
    (["tour", "--only", "{t}"], "only"),
  ],
)
def test_one_list_syntax_commas_or_spaces(argv, dest):
  """Every list option takes commas, spaces or both, with the same result."""
  values = {
    "a": ["2048", "4096"],
    "m": ["dense", "proxy"],
    "s": ["32x2", "48x2"],
    "r": ["a.csv", "b.csv"],
    "t": ["tcbench", "cot"],
  }
  key = next(k for k in values if "{" + k + "}" in argv)
  parser = cli.build_parser()
  i = argv.index("{" + key + "}")
  spaced = parser.parse_args(argv[:i] + values[key] + argv[i + 1 :])
  commas = parser.parse_args(argv[:i] + [",".join(values[key])] + argv[i + 1 :])
  mixed = parser.parse_args(argv[:i] + [values[key][0] + ",", values[key][1]] + argv[i + 1 :])
  assert getattr(spaced, dest) == getattr(commas, dest) == getattr(mixed, dest)


def test_list_option_checks_each_value(capsys):
  assert cli.main(["bench", "attention", "--methods", "dense,nope"]) == 2
  assert "'nope' is not one of" in capsys.readouterr().err


def test_inspect_reports_the_cache_per_layer_type(capsys, monkeypatch, tmp_path):
  assert cli.main(["inspect", "--preset", "gemma3-270m", "--json"]) == 0
  info = json.loads(capsys.readouterr().out)
  per = 2 * 1 * 256 * 2  # K kv heads x H x (k and v) x bf16 bytes, per layer and token
  assert info["layer_types"] == {"sliding_attention": 15, "full_attention": 3}
  assert info["kv_cache_bytes_per_token_global_layers"] == 3 * per
  row = next(r for r in info["kv_cache_by_context"] if r["context"] == 32768)
  assert row["bytes_windowed"] == 3 * per * 32768 + 15 * per * (512 + 128)  # local layers: rings of 640 slots
  assert row["bytes_full"] == 18 * per * 32768
  assert cli.main(["inspect", "--preset", "gemma3-270m"]) == 0
  assert "15 sliding_attention, 3 full_attention (window 512)" in capsys.readouterr().out
  monkeypatch.setenv("JAXEFF_CACHE", str(tmp_path))
  assert cli.main(["inspect", "gemma3-270m"]) == 2
  assert "jaxeff models fetch gemma3-270m" in capsys.readouterr().err
