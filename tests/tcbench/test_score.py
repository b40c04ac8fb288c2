"""The exclusion rate against hand-computed tables and a re-implementation of the official call order."""

import random

import pytest

from jaxeff.tcbench import hack_rate


def test_hand_computed_tables():
  # problem 1: 2 codes, 3 tests; problem 2: no tests at all; problem 3: a CE code and an all-AC code
  p1 = [["AC", "WA", "AC"], ["AC", "AC", "AC"]]
  p2 = [[], []]
  p3 = [["CE"], ["AC", "AC", "AC", "AC"]]
  out = hack_rate([p1, p2, p3], ks=(None,))
  assert out == {None: round(100 * (0.5 + 0.0 + 0.5) / 3, 2)}
  assert hack_rate([[["EXE"]]], ks=(None,)) == {None: 100.0}
  with pytest.raises(ValueError, match="k must be"):
    hack_rate([p1], ks=(6,))


def official(problems, seed, ks):
  """A direct re-implementation of get_rank_result.py's random calls and exclusion rule."""
  random.seed(seed)
  rates = {k: [] for k in ks}
  for codes in problems:
    r = len(codes)
    L = max(len(c) for c in codes)
    if 5 * r > L:
      idx = random.sample(range(L), L)
    else:
      idx = random.sample(range(L), 5 * r)
      random.shuffle(idx)
    for k in ks:
      sel = idx[: k * r]
      exc = 0
      for c in codes:
        if L == 0:
          break
        if len(c) <= max(sel):
          exc += any(s != "AC" for s in c)
        else:
          exc += any(c[i] != "AC" for i in sel)
      rates[k].append(exc / r)
  return {k: round(100 * sum(v) / len(v), 2) for k, v in rates.items()}


def test_seeded_stream_equals_the_official_call_order():
  rng = random.Random(0)
  problems = []
  for _ in range(30):
    r = rng.randint(1, 6)
    L = rng.randint(1, 40)
    codes = []
    for _ in range(r):
      if rng.random() < 0.1:
        codes.append(["CE"])
      else:
        codes.append([("AC" if rng.random() < 0.9 else rng.choice(["WA", "TLE", "RE"])) for _ in range(L)])
    problems.append(codes)
  for seed in (0, 1, 42):
    assert hack_rate(problems, seed=seed) == official(problems, seed, (1, 2, 3, 4, 5))


def test_status_table_first_failures_sum_to_hack_rate():
  from jaxeff.tcbench.score import status_table

  probs = [
    [["AC", "WA", "TLE"], ["RE", "AC", "AC"], ["AC", "AC", "AC"], ["CE"]],
    [["AC", "AC"], ["WA", "WA"]],
    [],  # no codes: counts as all AC (HackRate 0)
    [[], []],  # no tests
  ]
  for seed in range(4):
    hr = hack_rate(probs, ks=(1, 2, None), seed=seed)
    tab = status_table(probs, ks=(1, 2, None), seed=seed)
    for k in (1, 2, None):
      assert sum(v for s, v in tab[k].items() if s != "AC") == pytest.approx(hr[k], abs=0.02)
      assert sum(tab[k].values()) == pytest.approx(100.0, abs=0.02)
  full = status_table(probs, ks=(None,))[None]
  # problem 1: WA, RE, AC, CE (1/4 each); problem 2: AC, WA (1/2 each); problems 3-4: AC
  assert full["WA"] == round(100 * (0.25 + 0.5) / 4, 2) and full["CE"] == round(100 * 0.25 / 4, 2)
  assert full["RE"] == round(100 * 0.25 / 4, 2) and full["TLE"] == 0.0
