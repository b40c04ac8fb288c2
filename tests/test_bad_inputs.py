"""Every bad input of the table in ``tests/bad_inputs.py`` (issue 23): exit status 2, one line on stderr with the
expected words, no traceback, nothing written, no hang."""

from __future__ import annotations

import pytest

from tests.bad_inputs import ALL, CASES, Case, run_case


@pytest.mark.parametrize("case", ALL, ids=[c.id for c in ALL])
def test_bad_input_is_one_clear_line(case: Case, tmp_path):
  outcome = run_case(case, tmp_path / "case", limit_s=120)
  assert outcome.verdict(case) == "clear", (outcome.code, outcome.err[-500:], outcome.written)


def test_the_table_covers_every_command():
  from jaxeff.cli import build_parser

  sub = next(a for a in build_parser()._actions if a.dest == "command")
  covered = {c.argv[0] for c in CASES}
  assert set(sub.choices) - covered <= {"corpora"}, set(sub.choices) - covered  # corpora takes no input to get wrong
  assert len(ALL) >= 200 and len({c.id for c in ALL}) == len(ALL)
