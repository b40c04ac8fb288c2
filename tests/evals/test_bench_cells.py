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


def test_a_second_models_rows_go_beside_the_first_and_survive_its_rerun(tmp_path):
  """``--model gemma3-270m`` writes its rows under ``results.models`` and its targets prefixed with its name; a
  rerun of the first model keeps them; each model's records file is its own."""
  from benchmarks.bench_real_model import MODEL, write_results

  def cell(work, row, scores):
    f = work / "cells" / "aware" / "2048" / "niah_single" / f"{row}.jsonl"
    f.parent.mkdir(parents=True, exist_ok=True)
    rec = lambda i, s: dict(task="niah_single", length=2048, index=i, score=s, prediction="", tokens=[], seconds=1.0)
    f.write_text("".join(json.dumps(rec(i, s)) + "\n" for i, s in enumerate(scores)))

  out = tmp_path / "results" / "real_model.json"
  first, second = tmp_path / "w1", tmp_path / "w2"
  cell(first, "dense", [1.0, 0.0])
  cell(second, "dense", [1.0, 1.0])
  write_results(first, out, {}, [], MODEL)
  own = write_results(second, out, {}, [], "gemma3-270m")
  assert [r["score"] for r in own["results"]["table"]] == [100.0]
  write_results(first, out, {}, [], MODEL)  # the first model again: the second's rows and targets stay
  saved = json.loads(out.read_text())
  assert saved["model"] == MODEL and saved["results"]["table"][0]["score"] == 50.0
  assert saved["results"]["models"]["gemma3-270m"]["table"][0]["score"] == 100.0
  names = [t["name"] for t in saved["targets"]]
  assert any(n.startswith("gemma3-270m: ") for n in names) and any(not n.startswith("gemma3-270m") for n in names)
  assert (out.parent / "real_model_records.jsonl.gz").is_file()
  assert (out.parent / "real_model_gemma3-270m_records.jsonl.gz").is_file()


def test_a_fresh_work_folder_gets_the_committed_rows_metadata_and_timings(tmp_path):
  """A partial rerun from a fresh clone (records seeded, no rows.json) must not write the committed rows back
  without their densities, nor drop the committed cell timings; what the work folder has wins."""
  from benchmarks.bench_real_model import seed_meta

  out = tmp_path / "real_model.json"
  committed = {
    "rows": {"proxyattn": {"group": "sparse", "density": 0.87}, "dense": {"group": "dense"}},
    "timings": [1],
  }
  out.write_text(json.dumps({"results": {"models": {"gemma3-270m": committed}}}))
  work = tmp_path / "w"
  work.mkdir()
  (work / "rows.json").write_text(json.dumps({"dense": {"group": "dense", "note": "new"}, "judgeq-10": {}}))
  (work / "timings.json").write_text(json.dumps([2]))
  seed_meta(work, out, "gemma3-270m")
  rows = json.loads((work / "rows.json").read_text())
  assert rows["proxyattn"]["density"] == 0.87 and rows["dense"]["note"] == "new" and "judgeq-10" in rows
  assert json.loads((work / "timings.json").read_text()) == [1, 2]
  seed_meta(work, out, "gemma3-270m")  # idempotent
  assert json.loads((work / "timings.json").read_text()) == [1, 2]
  # the transformers oracle check (results.oracle) comes back too, unless the work folder has its own
  out.write_text(json.dumps({"results": {"models": {"gemma3-270m": {**committed, "oracle": {"8192": {"n": 6}}}}}}))
  seed_meta(work, out, "gemma3-270m")
  assert json.loads((work / "oracle.json").read_text()) == {"8192": {"n": 6}}
  (work / "oracle.json").write_text(json.dumps({"4096": {"n": 2}}))
  seed_meta(work, out, "gemma3-270m")
  assert json.loads((work / "oracle.json").read_text()) == {"4096": {"n": 2}}
