"""TC-Bench end to end on real executions: build -> select -> evaluate through the CLI; filters; JSONL errors."""

import json

import pytest

from jaxeff import cli
from jaxeff.tcbench import pipeline as tp

TESTS = [{"input": f"{n}\n", "output": f"{n * n}\n"} for n in range(1, 8)]


def wrong(k, also=None):
  cond = f"n == {k}" if also is None else f"n in ({k}, {also})"
  return f"n = int(input())\nprint(0 if {cond} else n * n)"


def problem():
  codes = [{"id": f"w{k}", "code": wrong(k), "lang": "python"} for k in range(1, 7)]
  codes.append({"id": "w12", "code": wrong(1, 2), "lang": "python"})  # a combination of w1 and w2
  codes.append({"id": "dup", "code": wrong(3) + "\n# same behaviour as w3", "lang": "python"})
  codes.append({"id": "crash", "code": "raise SystemExit(1)", "lang": "python"})
  codes.append({"id": "ok", "code": "n = int(input())\nprint(n * n)", "lang": "python"})
  return {"id": "sq", "tests": TESTS, "wrong_codes": codes, "time_limit_ms": 1000}


def test_filters_by_hand():
  v = [
    ["AC", "WA", "AC"],
    ["AC", "AC", "AC"],
    ["WA", "WA", "WA"],
    ["AC", "WA", "AC"],
    ["TLE", "WA", "AC"],
    ["WA", "AC", "AC"],
  ]
  m = tp.matrix_from_verdicts(list("abcdef"), v, min_rank=1)
  # b passes all, c fails > 80 %, d duplicates a, e has a TLE; sorted by passes (stable)
  assert m["codes"] == ["a", "f"] and m["rows"] == ["AWA", "WAA"] and m["rank"] == 2
  assert "rejected" in tp.matrix_from_verdicts(
    list("ab"), [["WA", "AC"], ["WA", "WA"]], min_rank=1, all_ones="drop_problem"
  )
  assert tp.matrix_from_verdicts(list("af"), [v[0], v[5]], min_rank=5) == {"rejected": "rank 2 < 5"}


def test_build_select_evaluate_cli(tmp_path, capsys):
  from jaxeff.sandbox import isolation

  isolation.require_isolation()  # up front: the CLI would only report it on stderr (conftest turns it into a skip)
  probs = tmp_path / "problems.jsonl"
  tp.write_jsonl(probs, [problem()])
  mats, sels, gen = tmp_path / "m.jsonl", tmp_path / "s.jsonl", tmp_path / "g.jsonl"
  assert (
    cli.main(
      [
        "tcbench",
        "build",
        "--problems",
        str(probs),
        "--matrices",
        str(mats),
        "--cache",
        str(tmp_path / "c"),
        "--workers",
        "2",
      ]
    )
    == 0
  )
  (m,) = tp.read_jsonl(mats)
  assert sorted(m["codes"]) == ["w1", "w12", "w2", "w3", "w4", "w5", "w6"]  # dup, crash and the correct code gone
  assert m["rank"] == 6 and m["tests"] == list(range(7))
  assert m["codes"][-1] == "w12"  # fewest passed tests last
  assert cli.main(["tcbench", "select", "--matrices", str(mats), "--selections", str(sels)]) == 0
  (s,) = tp.read_jsonl(sels)
  assert s["rank"] == 6 and len(set(s["codes"])) == 6
  # generated tests: n = 1..3 only catch the codes whose bug is at 1, 2 or 3
  tp.write_jsonl(gen, [{"id": "sq", "tests": [{"input": f"{n}\n", "output": f"{n * n}\n"} for n in (1, 2, 3)]}])
  capsys.readouterr()
  assert (
    cli.main(["tcbench", "evaluate", "--problems", str(probs), "--selections", str(sels), "--generated", str(gen)])
    == 0
  )
  res = json.loads(capsys.readouterr().out)
  caught = sum(any(k in c for k in ("1", "2", "3")) for c in s["codes"])
  assert res["hack_rate"]["all"] == round(100 * caught / 6, 2)
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"id": "x", "tests": [], "wrong_codes": []}\n{not json}\n')
  assert cli.main(["tcbench", "build", "--problems", str(bad), "--matrices", str(mats)]) == 2
  assert "bad.jsonl:2" in capsys.readouterr().err
  with pytest.raises(ValueError, match="missing .tests."):
    bad.write_text('{"id": "x"}\n')
    tp.read_jsonl(bad, ("id", "tests"))


@pytest.mark.parametrize(
  "limits", [{"memory_limit_mb": 0}, {"time_limit_ms": 0}, {"time_limit_ms": -5}, {"time_limit_ms": "1000"}]
)
def test_problem_limits_must_be_positive_numbers(limits):
  for preset in tp.LIMIT_PRESETS:
    with pytest.raises(ValueError, match=r"problem 'p7': limits must be positive numbers"):
      tp.problem_limits({"id": "p7", **limits}, preset)
  assert tp.problem_limits({"time_limit_ms": 1500, "memory_limit_mb": 64}, "strict").time_s == 1.5


SAMPLE = __import__("pathlib").Path(__file__).parent.parent / "fixtures" / "tcbench" / "sample.jsonl"


def test_load_released_rows_and_clear_errors(tmp_path):
  probs, mats = tp.load_released(SAMPLE)
  assert [p["id"] for p in probs] == ["sum-0001", "max-0002"]
  p = probs[0]
  assert [c["lang"] for c in p["wrong_codes"]] == ["cpp", "cpp", "cpp"]
  assert [c["lang"] for c in p["solutions"]] == ["cpp", "python"]
  assert p["tests"] == [{"input": "1 2\n", "output": "3\n"}] and p["time_limit_ms"] == 1000
  assert mats[0]["rows"] == ["AAWWA", "WWWAW", "AWAAA"] and mats[0]["codes"] == [0, 1, 2]
  assert mats[0]["rank"] == 3 and mats[0]["rank_released"] == 3
  assert tp.problem_limits(p).time_s == 4.0  # the official runner's limits: ms // 1000 + 3
  rows = [json.loads(x) for x in SAMPLE.read_text().splitlines()]
  rows[0]["wrong_solutions"][0]["output_str"] = "AAXWA"
  rows[1]["solutions"][0]["lang"] = "Brainfuck"
  rows.append({"problem_id": "x"})
  bad = tmp_path / "bad.jsonl"
  bad.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
  with pytest.raises(ValueError) as e:
    tp.load_released(bad)
  msg = str(e.value)
  assert "3 bad rows" in msg and "Brainfuck" in msg and "missing description" in msg and "sum-0001" in msg
  with pytest.raises(FileNotFoundError, match="nothing is fetched"):
    tp.load_released(tmp_path / "absent.jsonl")


def test_generated_tests_are_validated_by_correct_codes_before_scoring(tmp_path):
  (probs, _) = tp.load_released(SAMPLE)
  p = probs[0]  # a + b with two correct codes (C++ and Python)
  gen = [
    ("3 4\n", "7\n"),  # right: kept
    ("5 5\n", "11\n"),  # wrong expected output (both correct codes print 10): fixed to 10
    ("oops\n", "0\n"),  # malformed input: the correct codes crash (RE): dropped
    ("3000000000 1\n", "3000000001\n"),  # right: kept
  ]
  kept, rep = tp.validate_tests(gen, p["solutions"], tp.problem_limits(p), cache_dir=tmp_path / "c")
  assert kept == [("3 4\n", "7\n"), ("5 5\n", "10\n"), ("3000000000 1\n", "3000000001\n")]
  assert rep == {"solutions_run": 2, "solutions_kept": 2, "kept": 3, "fixed": 1, "dropped": 1}
  sel = [{"id": p["id"], "codes": [0, 1, 2]}]
  g = [{"id": p["id"], "tests": [{"input": i, "output": o} for i, o in gen]}]
  raw = tp.evaluate(sel, [p], g, ks=(None,), cache_dir=tmp_path / "c", validate=False)
  val = tp.evaluate(sel, [p], g, ks=(None,), cache_dir=tmp_path / "c")
  # unvalidated, the wrong "11" excludes every code (even the a == b one would be caught for the wrong reason);
  # validated: overflow (3e9), minus (3 4) and the a == b bug (5 5 -> 11 vs 10) are each caught by a right test
  assert raw["hack_rate"]["all"] == 100.0 and val["hack_rate"]["all"] == 100.0
  assert val["validation"][p["id"]]["fixed"] == 1
  first = val["status_table"]["all"]
  assert first["WA"] == 100.0 and first["AC"] == 0.0
  # a wrongly-labelled test next to a right one: unvalidated it "catches" every code, even the overflow one that
  # is right on small inputs; validated it is fixed to "2" and only the minus and a == b bugs are caught
  g2 = [{"id": p["id"], "tests": [{"input": "1 1\n", "output": "5\n"}, {"input": "2 3\n", "output": "5\n"}]}]
  assert tp.evaluate(sel, [p], g2, ks=(None,), cache_dir=tmp_path / "c", validate=False)["hack_rate"]["all"] == 100.0
  v2 = tp.evaluate(sel, [p], g2, ks=(None,), cache_dir=tmp_path / "c")
  assert v2["hack_rate"]["all"] == round(100 * 2 / 3, 2) and v2["status_table"]["all"]["AC"] == round(100 / 3, 2)
  # a correct code wrong on every test validates nothing: with only the mislabelled test, nothing is kept
  only_bad = [("1 1\n", "5\n")]
  assert tp.validate_tests(only_bad, p["solutions"], tp.problem_limits(p), cache_dir=tmp_path / "c")[0] == []


def test_cli_import_released(tmp_path, capsys):
  probs, mats = tmp_path / "p.jsonl", tmp_path / "m.jsonl"
  args = ["tcbench", "import", "--released", str(SAMPLE), "--problems", str(probs), "--matrices", str(mats)]
  assert cli.main(args) == 0
  assert [p["id"] for p in tp.read_problems(probs)] == ["sum-0001", "max-0002"]
  assert tp.read_matrices(mats)[1]["rows"] == ["WAWA", "WWAA", "AAAW"]
