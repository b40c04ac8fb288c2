"""The real-model benchmark's resumable cells never lose recorded examples: a rerun with a smaller ``--n`` keeps
the records past it (it once truncated a 25-example cell to 10), and records that contradict the examples are
moved aside, not deleted."""

import json
from types import SimpleNamespace

from benchmarks.bench_real_model import _cell_done


def _write(f, indices):
  f.write_text("".join(json.dumps({"index": i, "score": 1.0}) + "\n" for i in indices))


def test_a_smaller_n_keeps_every_record(tmp_path):
  f = tmp_path / "dense.jsonl"
  _write(f, range(25))
  exs = [SimpleNamespace(index=i) for i in range(10)]
  assert _cell_done(f, exs) == 10
  assert len(f.read_text().splitlines()) == 25
  assert _cell_done(f, [SimpleNamespace(index=i) for i in range(30)]) == 25


def test_contradicting_records_are_moved_aside(tmp_path):
  f = tmp_path / "dense.jsonl"
  _write(f, [0, 1, 2, 7, 8])
  f.write_text(f.read_text() + '{"index": 9, "sco')  # a torn last line
  exs = [SimpleNamespace(index=i) for i in range(6)]
  assert _cell_done(f, exs) == 3
  assert [json.loads(x)["index"] for x in f.read_text().splitlines()] == [0, 1, 2]
  stale = (tmp_path / "dense.jsonl.stale").read_text().splitlines()
  assert [json.loads(x)["index"] for x in stale[:2]] == [7, 8] and len(stale) == 3
