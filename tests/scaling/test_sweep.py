"""The sweep runner: counters vs leaf sizes, designs, an atomic resumable table, and the fit / sweep CLI."""

import json

import jax
import numpy as np
import pytest

from jaxeff import cli
from jaxeff.models import init_params
from jaxeff.scaling import sweep as sw


def test_counters_equal_leaf_sizes_and_hand_flops():
  cfg = sw.model_for(48, 3)
  params = init_params(cfg, jax.random.key(0))
  total = sum(x.size for x in jax.tree.leaves(params))
  assert sw.count_params(cfg, embeddings=True) == total
  assert sw.count_params(cfg) == total - cfg.vocab_size * cfg.d_model  # the untied head stays in N
  n = sw.count_params(cfg)
  assert sw.train_flops(cfg, 1000) == 6 * n * 1000
  assert sw.train_flops(cfg, 1000, seq_len=64, attention=True) == 6 * n * 1000 + 12 * 3 * 64 * 48 * 1000
  pts = sw.isoflop_design([1e10], [(32, 2), (64, 2)])
  for p in pts:
    assert abs(6 * sw.count_params(p.model) * p.tokens - 1e10) / 1e10 < 1e-3
  assert sw.parse_mixture("python:0.25,gcide:0.75") == (("python", "gcide"), (0.25, 0.75))
  with pytest.raises(ValueError, match="multiple of 16"):
    sw.model_for(40, 2)


def test_sweep_resumes_without_rerunning_finished_points(tmp_path, monkeypatch):
  kw = dict(seq_len=32, batch_size=4, eval_batches=1, progress=False, max_documents=20)
  first = sw.grid_design([(16, 1)], [256, 512])
  rows = sw.run_sweep(first, tmp_path, **kw)
  assert [r["name"] for r in rows] == [p.name for p in first]
  assert [r["D"] for r in rows] == [256, 512] and all(r["loss"] > 0 for r in rows)
  assert rows[0]["C"] == 6 * rows[0]["N"] * rows[0]["D"]

  import jaxeff.training.trainer as tr

  calls = []
  real = tr.train_and_evaluate
  monkeypatch.setattr(tr, "train_and_evaluate", lambda cfg, wd, **k: calls.append(wd) or real(cfg, wd, **k))
  more = first + sw.grid_design([(16, 1)], [384])
  rows = sw.run_sweep(more, tmp_path, **kw)
  assert len(calls) == 1 and calls[0].name == more[-1].name  # finished points skipped
  assert len(rows) == 3 and not list(tmp_path.glob("*.tmp"))
  # the same points with a setting that changes their result: an error naming them, never the old rows
  for changed in (dict(kw, lr=1e-3), dict(kw, seq_len=64), dict(kw, batch_size=8)):
    with pytest.raises(ValueError, match="run with other settings"):
      sw.run_sweep(more, tmp_path, **changed)
  assert len(calls) == 1  # nothing trained


def test_fit_and_sweep_cli(tmp_path, capsys):
  from jaxeff.scaling.laws import EPOCH, chinchilla_predict

  N = np.repeat(np.geomspace(1e6, 1e8, 4), 4)
  D = np.tile(np.geomspace(1e7, 1e9, 4), 4)
  L = chinchilla_predict(EPOCH, N, D)
  table = tmp_path / "t.csv"
  table.write_text("N,D,loss\n" + "".join(f"{n},{d},{l}\n" for n, d, l in zip(N, D, L)))
  assert cli.main(["fit", "--results", str(table), "--json", "--plot", str(tmp_path / "f.png")]) == 0
  out = json.loads(capsys.readouterr().out)
  assert abs(out["params"]["alpha"] - EPOCH.alpha) < 1e-4 and (tmp_path / "f.png").stat().st_size > 1000
  assert out["mean_relative_error"] < 1e-8
  bad = tmp_path / "bad.csv"
  bad.write_text("N,loss\n1,2\n")
  assert cli.main(["fit", "--results", str(bad)]) == 2
  assert "missing columns ['D']" in capsys.readouterr().err
  bad.write_text("N,D,loss\n1e6,1e7,2.0\n-1,1e7,2.0\n2e6,1e7,1.9\n")
  assert cli.main(["fit", "--results", str(bad)]) == 2
  assert "must be > 0" in capsys.readouterr().err
  assert cli.main(["sweep", "--workdir", str(tmp_path / "s"), "--sizes", "32x2", "--tokens", "1000", "--dry-run"]) == 0
  assert "python-d32-l2-D1000" in capsys.readouterr().out
  assert cli.main(["sweep", "--workdir", str(tmp_path / "s"), "--sizes", "32", "--dry-run"]) == 2


def test_two_sweeps_into_one_table_the_second_fails_at_once(tmp_path):
  import subprocess
  import sys

  from jaxeff.io import FolderLocked

  code = (
    f"from jaxeff.io import locked_folder\nwith locked_folder({str(tmp_path)!r}, name='.results.csv.lock'):\n"
    "  print('held', flush=True)\n  import time; time.sleep(60)"
  )
  holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(FolderLocked, match=f"PID {holder.pid}"):
      sw.run_sweep(sw.grid_design([(16, 1)], [256]), tmp_path, progress=False)
  finally:
    holder.kill()
    holder.wait()
