"""The arith task generator: formats, exact answers, the noisy teacher's slip rule, packing and masks, splits."""

import numpy as np
import pytest

from jaxeff.generation.answers import after_marker
from jaxeff.tasks import arith
from jaxeff.tokenizer import ByteTokenizer


def test_formats_and_exact_answers():
  rng = np.random.default_rng(0)
  for _ in range(200):
    digits = tuple(int(x) for x in rng.integers(0, 10, size=rng.integers(1, 11)))
    p = arith.ArithProblem(digits)
    assert p.answer == str(sum(digits) % 10)
    cot = p.cot()
    steps = cot[1:].split(";")[:-1]
    assert len(steps) == p.k
    s = 0
    for i, step in enumerate(steps):  # each step: label, digit, '>', running sum
      s = (s + digits[i]) % 10
      assert step == f"{arith.LABELS[i]}{digits[i]}>{s}"
    assert after_marker(cot) == p.answer == after_marker(p.direct())
    assert p.carries == sum(1 for i in range(p.k) if sum(digits[:i]) % 10 + digits[i] >= 10)
  with pytest.raises(ValueError, match="digits"):
    arith.ArithProblem(())
  with pytest.raises(ValueError, match="digits"):
    arith.ArithProblem((1, 12))


def test_noisy_teacher_slips_only_after_slip_after_nonzero_digits_at_rate_eps():
  rng = np.random.default_rng(1)
  eps, slips, eligible = 0.3, 0, 0
  for p in arith.sample_problems(3000, seed=3, split="train", p_nonzero=0.6):
    noisy = p.chain(eps, rng, slip_after=3)
    s, seen = 0, 0
    for d, t in zip(p.digits, noisy):  # replay from the teacher's own (possibly wrong) running sums
      seen += d != 0
      if d and seen > 3:
        eligible += 1
        slips += t != (s + d) % 10
      else:
        assert t == (s + d) % 10  # exact on zeros and on the first three non-zero digits
      s = t
  rate = slips / eligible
  assert abs(rate - eps) < 4 * np.sqrt(eps * (1 - eps) / eligible)


def test_rows_masks_and_split():
  tok = ByteTokenizer()
  rows, masks = arith.arith_rows(6, 128, seed=2, eps=0.0)
  assert rows.shape == (6, 129) and masks.shape == (6, 128)
  for r, m in zip(rows, masks):
    starts = np.flatnonzero(r == tok.bos_id)
    assert len(starts) >= 2
    for a, b in zip(starts, list(starts[1:]) + [len(r)]):
      ex = r[a:b]
      text = tok.decode(ex)
      prompt, body = text.split("=", 1)
      p = arith.ArithProblem(tuple(int(c) for c in prompt[1::2]))
      assert body in (p.cot(), p.direct())
      eos = a + int(np.flatnonzero(ex == tok.eos_id)[0])
      mode_at = a + 1 + len(prompt) + 1  # bos, prompt, '='  -> the mode token
      trained = np.flatnonzero(m[a:eos]) + a + 1  # positions of trained targets (targets are row[1:])
      assert trained[0] == mode_at + 1 and trained[-1] == eos  # completion after the mode token, EOS included
    assert m[rows[0].tolist().index(tok.bos_id)] == 0
  val = {p.digits for p in arith.sample_problems(400, seed=0, split="validation")}
  train = {p.digits for p in arith.sample_problems(4000, seed=0, split="train")}
  assert val and not val & train
  with pytest.raises(ValueError, match="p_nonzero"):
    arith.sample_problems(3, p_nonzero=1.5)


def test_tiny_arith_reasons_exactly_when_greedy_and_disagrees_when_sampled():
  """The reference model: greedy chains are right; sampled chains err on hard problems only, so self-consistency
  has something to fix there, and its direct answers are exact on easy problems."""
  from jaxeff.models.embedded import load_reference_model

  cfg, params, _ = load_reference_model("tiny-arith")
  easy = [p for p in arith.sample_problems(120, seed=5) if p.nonzero <= 2][:24]
  hard = [p for p in arith.sample_problems(400, seed=5) if p.nonzero >= 5][:24]
  assert len(easy) == len(hard) == 24
  greedy = arith.accuracy_by_k(cfg, params, easy + hard, mode="cot")
  assert min(greedy.values()) >= 0.9
  direct = arith.accuracy_by_k(cfg, params, easy, mode="direct")
  assert min(direct.values()) >= 0.95
  sampled = arith.accuracy_by_k(cfg, params, hard, mode="cot", temperature=1.0, seed=1)
  assert max(sampled.values()) <= 0.8
