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
