"""SeerSC and its baselines against closed forms, exact enumeration, scripted sample streams and the real sampler."""

import itertools
import math

import jax
import numpy as np
import pytest
from scipy import stats

from jaxeff.generation import seersc as S
from jaxeff.generation.answers import after_marker, choice_letter, extract_boxed, last_number, normalize


# ------------------------------------------------------------------------------------------------ entropy / confidence
def test_entropy_closed_forms():
  for K in (1, 2, 3, 7):
    assert S.weighted_entropy([str(i) for i in range(K)], [0.4] * K) == pytest.approx(math.log2(K))
  assert S.weighted_entropy(["5"] * 9, np.linspace(0.1, 1, 9)) == 0.0
  s1, s2 = 0.9 + 0.3, 0.2  # two classes with totals s1, s2: the binary entropy of s1 / (s1 + s2)
  q = s1 / (s1 + s2)
  want = -(q * math.log2(q) + (1 - q) * math.log2(1 - q))
  answers, conf = ["a", "b", " a "], [0.9, 0.2, 0.3]  # exact strings after strip(): " a " joins "a"
  assert S.weighted_entropy(answers, conf) == pytest.approx(want)
  assert S.weighted_entropy(answers, [7 * c for c in conf]) == pytest.approx(want)  # scale invariant
  perm = [2, 0, 1]
  assert S.weighted_entropy([answers[i] for i in perm], [conf[i] for i in perm]) == pytest.approx(want)
  assert S.weighted_entropy(answers, conf, base=math.e) / math.log(2) == pytest.approx(want)
  assert S.weighted_entropy(["1", "2"], [0.0, 0.0]) == 0.0
  assert S.weighted_entropy(["1", "1.0"], [1.0, 1.0]) == pytest.approx(1.0)  # no math normalisation here
  with pytest.raises(ValueError, match="answers but"):
    S.weighted_entropy(["1"], [0.1, 0.2])
  with pytest.raises(ValueError, match="finite and >= 0"):
    S.weighted_entropy(["1"], [-0.1])


def test_confidence_policies():
  lp = np.log([0.5, 0.8, 0.1])
  assert S.confidence(lp) == pytest.approx((0.5 * 0.8 * 0.1) ** (1 / 3))
  assert S.confidence(lp, "min") == pytest.approx(0.1)
  assert S.confidence(lp, "mean") == pytest.approx((0.5 + 0.8 + 0.1) / 3)
  assert S.confidence([]) == 0.0
  with pytest.raises(ValueError, match="unknown confidence policy"):
    S.confidence(lp, "median")


def test_budget_boundaries_and_bad_input():
  assert [S.budget(e, 8) for e in (0.0, 0.5999, 0.6, 1.9999, 2.0, 6.0)] == [1, 1, 4, 4, 8, 8]
  assert [S.budget(e, 16, S.GPQA_THRESHOLDS) for e in (0.1999, 0.2, 0.6999, 0.7)] == [1, 8, 8, 16]
  assert S.budget(1.0, 7) == 3  # odd N rounds down
  assert S.budget(1.0, 1) == 1  # never 0
  for bad in [dict(n=0), dict(n=2.5), dict(n=True)]:
    with pytest.raises(ValueError, match="N must be an integer"):
      S.budget(1.0, **bad)
  for thr in [(2.0, 0.6), (-0.1, 1.0), (0.5,), (0.1, float("inf"))]:
    with pytest.raises(ValueError, match="thresholds"):
      S.budget(1.0, 8, thr)
  with pytest.raises(ValueError, match="entropy"):
    S.budget(float("nan"), 8)
  with pytest.raises(ValueError, match="thresholds"):
    S.SeerSC(n=8, thresholds=(3.0, 1.0))
  with pytest.raises(ValueError, match="M must be"):
    S.SeerSC(n=8, m=0)
  with pytest.raises(ValueError, match="N must be"):
    S.SC(n=0)
  with pytest.raises(ValueError, match="ASC threshold"):
    S.ASC(n=8, threshold=1.2)
  with pytest.raises(ValueError, match="ESC form"):
    S.ESC(n=8, form="tumbling")


def test_simulated_system1_matches_enumeration():
  """Answers drawn from a known categorical p with confidence p(answer): the plug-in weighted entropy tends to the
  population value as M grows; at M = 64 its exact expectation (by enumerating every count vector) and the
  exact budget-decision probabilities match Monte Carlo."""
  p = np.array([0.6, 0.3, 0.1])
  labels = ["a", "b", "c"]
  rng = np.random.default_rng(0)

  def plug_in(counts):
    return S.weighted_entropy(
      [labels[i] for i in range(3) for _ in range(counts[i])], [p[i] for i in range(3) for _ in range(counts[i])]
    )

  w = p * p / (p * p).sum()
  population = float(-(w * np.log2(w)).sum())
  assert plug_in(np.round(p * 20000).astype(int)) == pytest.approx(population, abs=1e-3)

  M = 64
  exact_e, exact_b = 0.0, {1: 0.0, 4: 0.0, 8: 0.0}
  for a, b in itertools.product(range(M + 1), repeat=2):
    if a + b > M:
      continue
    c = (a, b, M - a - b)
    prob = stats.multinomial.pmf(c, M, p)
    e = plug_in(c)
    exact_e += prob * e
    exact_b[S.budget(e, 8)] += prob
  draws = [plug_in(rng.multinomial(M, p)) for _ in range(3000)]
  assert exact_e < population  # the plug-in is biased low
  assert np.mean(draws) == pytest.approx(exact_e, abs=4 * np.std(draws) / math.sqrt(3000))
  freq = {b: np.mean([S.budget(e, 8) == b for e in draws]) for b in exact_b}
  for b in exact_b:
    assert freq[b] == pytest.approx(exact_b[b], abs=0.03)


# ------------------------------------------------------------------------------------------------ methods on scripts
def stream(answers, lengths=None):
  lengths = lengths or [10 + i for i in range(len(answers))]
  return [(a, t) for a, t in zip(answers, lengths)]


def test_sc_and_seersc_accounting_and_votes():
  s2 = stream(["1", "2", "1", "3", "1", "2", "2", "2"], [5, 6, 7, 8, 9, 10, 11, 12])
  s1_easy = [("1", 1, math.log(0.9))] * 64  # one answer: entropy 0 -> budget 1
  s1_mid = [("1", 1, math.log(0.9))] * 48 + [("2", 1, math.log(0.9))] * 16  # 0.81 bits -> N // 2
  s1_hard = [(str(i % 8), 1, math.log(0.5)) for i in range(64)]  # 3 bits -> N
  backend = S.ScriptedBackend({(q, 2): s2 for q in range(3)} | {(0, 1): s1_easy, (1, 1): s1_mid, (2, 1): s1_hard})
  queries = [S.Query(q, gold="1") for q in range(3)]
  rep = S.run_batch(S.SeerSC(n=8), queries, backend)
  r = {x.query: x for x in rep.records}
  assert [r[q].budget for q in range(3)] == [1, 4, 8]
  assert r[1].entropy == pytest.approx(-(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)))
  assert [r[q].s2_tokens for q in range(3)] == [5, 5 + 6 + 7 + 8, sum(t for _, t in s2)]
  assert all(r[q].s1_tokens == 64 for q in range(3))
  assert [r[q].answer for q in range(3)] == ["1", "1", "2"]  # 8 samples: "2" x4 beats "1" x3
  assert [r[q].calls for q in range(3)] == [2, 2, 2]
  assert [r[q].latency_tokens for q in range(3)] == [1 + 5, 1 + 8, 1 + 12]  # longest row per call
  assert rep.rounds == 2 and len(backend.log) == 2  # one batched call per system per round
  assert [len(c) for c in backend.log] == [3, 3]

  sc = S.run_batch(S.SC(n=8), queries, S.ScriptedBackend({(q, 2): s2 for q in range(3)}))
  assert all(x.s2_tokens == 68 and x.s1_tokens == 0 and x.calls == 1 for x in sc.records)
  saving = 1 - rep.summary()["tokens"] / sc.summary()["tokens"]
  assert saving == pytest.approx(1 - (3 * 64 + 5 + 26 + 68) / (3 * 68))
  assert [x.answer for x in sc.records] == ["2"] * 3


def test_seersc_weighted_vote_and_ties():
  assert S.majority_vote(["b", "a", "a", "b"]) == "b"  # tie: first seen
  assert S.majority_vote([None, None]) is None
  assert S.majority_vote(["a", "b", "b"], [3.0, 1.0, 1.0]) == "a"
  s2 = [("1", 4, math.log(0.99)), ("2", 4, math.log(0.1)), ("2", 4, math.log(0.1)), ("1", 4, math.log(0.99))]
  s1 = [(str(i % 4), 1, 0.0) for i in range(64)]  # 2 bits -> budget N = 4
  b = S.ScriptedBackend({(0, 1): s1, (0, 2): s2})
  plain = S.run_batch(S.SeerSC(n=4), [S.Query(0)], b).records[0]
  weighted = S.run_batch(S.SeerSC(n=4, weighted_vote=True), [S.Query(0)], b).records[0]
  assert (plain.answer, weighted.answer) == ("1", "1")
  s2b = [("2", 4, math.log(0.1)), ("1", 4, math.log(0.99)), ("2", 4, math.log(0.1)), ("3", 4, math.log(0.5))]
  b = S.ScriptedBackend({(0, 1): s1, (0, 2): s2b})
  assert S.run_batch(S.SeerSC(n=4), [S.Query(0)], b).records[0].answer == "2"
  assert S.run_batch(S.SeerSC(n=4, weighted_vote=True), [S.Query(0)], b).records[0].answer == "1"


def test_seersc_with_n1_is_single_sampling():
  b = S.ScriptedBackend({(0, 2): stream(["4", "5"])})
  seer = S.run_batch(S.SeerSC(n=1), [S.Query(0, gold="4")], b)
  single = S.run_batch(S.SC(n=1), [S.Query(0, gold="4")], b)
  for k in ("tokens", "s1_tokens", "s2_tokens", "calls_per_query", "rounds", "accuracy", "latency_tokens_per_query"):
    assert seer.summary()[k] == single.summary()[k]
  assert seer.records[0].s1_tokens == 0 and seer.records[0].s2_samples == 1


def test_esc_stop_rules():
  answers = ["a", "b", "a", "a", "a", "a", "a", "c", "c", "c"]
  b = S.ScriptedBackend({(0, 2): stream(answers)})
  r = S.run_batch(S.ESC(n=10, window=5, form="sliding"), [S.Query(0)], b).records[0]
  assert r.s2_samples == 7 and r.calls == 7 and r.answer == "a"  # the spec's [a,b,a,a,a,a,a] stops at 7
  assert r.latency_tokens == sum(10 + i for i in range(7))  # one row per call
  # window form: windows [a b a a a] (not unanimous), [a a c c c] -> cap 10
  r = S.run_batch(S.ESC(n=10, window=5, form="window"), [S.Query(0)], b).records[0]
  assert (r.s2_samples, r.calls) == (10, 2)
  b2 = S.ScriptedBackend({(0, 2): stream(["x"] * 3 + ["y"] * 3)})
  r = S.run_batch(S.ESC(n=6, window=3, form="window"), [S.Query(0)], b2).records[0]
  assert (r.s2_samples, r.calls, r.answer) == (3, 1, "x")
  xyzw = S.ScriptedBackend({(0, 2): stream(list("xyzw"))})
  r = S.run_batch(S.ESC(n=4, window=3, form="window"), [S.Query(0)], xyzw).records[0]
  assert (r.s2_samples, r.calls) == (4, 2)  # the last window is cut to the cap
  none_window = S.ScriptedBackend({(0, 2): stream([None] * 5 + ["q"])})
  r = S.run_batch(S.ESC(n=6, window=5, form="window"), [S.Query(0)], none_window).records[0]
  assert r.s2_samples == 6 and r.answer == "q"  # missing answers never agree and never win


@pytest.mark.parametrize("a, b", [(0, 0), (1, 0), (3, 0), (4, 0), (5, 2), (9, 4), (12, 3)])
def test_asc_probability_is_the_beta_survival(a, b):
  assert S.asc_probability(a, b) == pytest.approx(stats.beta.sf(0.5, a + 1, b + 1), abs=1e-12)


def test_asc_stops_where_the_beta_criterion_says():
  answers = ["a", "b", "a", "a", "b", "a", "a", "a", "a", "a", "a", "a"]
  r = S.run_batch(S.ASC(n=12), [S.Query(0)], S.ScriptedBackend({(0, 2): stream(answers)})).records[0]
  want = None
  for t in range(1, 13):  # the definition, written out: counts of the top two after t samples
    c = sorted([answers[:t].count("a"), answers[:t].count("b")], reverse=True)
    if stats.beta.sf(0.5, c[0] + 1, c[1] + 1) >= 0.95:
      want = t
      break
  assert r.s2_samples == want == 10 and r.calls == want
  unanimous = S.run_batch(S.ASC(n=12), [S.Query(0)], S.ScriptedBackend({(0, 2): stream(["z"] * 12)})).records[0]
  assert unanimous.s2_samples == 4  # P = 1 - 2^-5 >= 0.95 after 4 agreeing samples
  capped = S.run_batch(S.ASC(n=5), [S.Query(0)], S.ScriptedBackend({(0, 2): stream(list("abcde"))})).records[0]
  assert capped.s2_samples == 5


def test_batch_rounds_follow_the_slowest_query_and_batch_size():
  streams = {(0, 2): stream(["a"] * 6), (1, 2): stream(list("abcdef")), (2, 2): stream(["b"] * 6)}
  b = S.ScriptedBackend(streams)
  rep = S.run_batch(S.ASC(n=6), [S.Query(q) for q in range(3)], b)
  assert rep.rounds == 6  # query 1 never agrees
  assert [len(c) for c in b.log] == [3, 3, 3, 3, 1, 1]  # queries 0 and 2 stop after 4 samples
  b = S.ScriptedBackend(streams)
  rep = S.run_batch(S.ASC(n=6), [S.Query(q) for q in range(3)], b, batch_size=2)
  assert rep.rounds == 6 + 4 and [x.s2_samples for x in rep.records] == [4, 6, 4]
  with pytest.raises(ValueError, match="unique"):
    S.run_batch(S.SC(n=2), [S.Query(0), S.Query(0)], b)


def test_calibrate_thresholds_on_a_constructed_dev_split():
  # queries 0-1: entropy 0.3, one sample is right; 2-3: entropy 1.2, first sample wrong, 4 or 8 right;
  # 4: entropy 3, only all 8 are right
  ent = [0.3, 0.3, 1.2, 1.2, 3.0]
  ans = [["1"] * 8, ["2"] * 8, ["x", "3", "3", "3", "3", "y", "y", "z"], ["q", "4", "4", "4", "4", "w", "w", "v"]]
  ans.append(["a", "b", "c", "d", "5", "5", "5", "f"])
  golds = ["1", "2", "3", "4", "5"]
  toks = [[10] * 8] * 5
  out = S.calibrate_thresholds(ent, ans, toks, golds, 8, tolerance=0.0)
  assert out["sc_accuracy"] == 1.0 and out["sc_s2_tokens"] == 400
  assert out["accuracy"] == 1.0
  t1, t2 = out["thresholds"]
  assert 0.3 < t1 <= 1.2 < t2 <= 3.0  # easy -> 1, middle -> 4, hard -> 8
  assert out["s2_tokens"] == 2 * 10 + 2 * 40 + 80
  loose = S.calibrate_thresholds(ent, ans, toks, golds, 8, tolerance=0.4)  # may drop the two middle queries
  assert loose["s2_tokens"] == 4 * 10 + 80 and loose["accuracy"] == pytest.approx(0.6)
  with pytest.raises(ValueError, match=">= N=8"):
    S.calibrate_thresholds(ent, [a[:4] for a in ans], toks, golds, 8)


def test_calibrate_draws_dev_samples_and_matches_the_table_version():
  rng = np.random.default_rng(4)
  streams, queries = {}, []
  for q in range(12):
    spread = q % 3  # 0: one answer, 1: two answers, 2: eight answers
    s1 = [(str(i % [1, 2, 8][spread]), 1, math.log(0.7)) for i in range(16)]
    s2 = [(str(int(rng.integers(0, 2)) if spread else 0), 7) for _ in range(4)]
    streams[(q, 1)], streams[(q, 2)] = s1, s2
    queries.append(S.Query(q, gold="0"))
  b = S.ScriptedBackend(streams)
  out = S.calibrate(queries, b, 4, m=16, tolerance=0.0, batch_size=5)
  assert [len(c) for c in b.log] == [5, 5, 5, 5, 2, 2]  # System 1 then System 2 per chunk of 5
  want = S.calibrate_thresholds(
    [[0.0, 1.0, 3.0][q % 3] for q in range(12)],
    [[a for a, _ in streams[(q, 2)]] for q in range(12)],
    [[7] * 4] * 12,
    ["0"] * 12,
    4,
    tolerance=0.0,
  )
  assert out["entropies"] == pytest.approx([[0.0, 1.0, 3.0][q % 3] for q in range(12)])
  assert {k: out[k] for k in want} == want
  assert out["cost_tokens"] == 12 * (16 * 1 + 4 * 7)  # every calibration token counted: M S1 + N S2 per query
  with pytest.raises(ValueError, match="gold"):
    S.calibrate([S.Query(0)], b, 4)


# ------------------------------------------------------------------------------------------------ parsers
def test_answer_parsers_edge_cases():
  assert extract_boxed(r"first \boxed{1} then \boxed{\frac{2}{3}}") == r"\frac{2}{3}"
  assert extract_boxed(r"\boxed{a{b}c}") == "a{b}c"
  assert extract_boxed(r"\boxed{unclosed") is None
  assert extract_boxed("no box") is None
  assert extract_boxed(r"\boxed 7 apples") == "7"
  assert extract_boxed(r"\fbox{9}") == "9"
  assert last_number("x = -3.50 or 1,234") == "1234"
  assert last_number("ratio 3/4.") == "3/4"
  assert last_number("-0.5") == "-0.5"
  assert last_number("none") is None
  assert choice_letter(r"so \boxed{(C)}") == "C"
  assert choice_letter("The answer is (b).") == "B"
  assert choice_letter("I pick D") == "D"
  assert choice_letter("Nothing here") is None
  assert after_marker("a1>1;A:7") == "7" and after_marker("A:") is None and after_marker("x") is None
  assert normalize(r" \frac{1}{2} ") == "1/2" and normalize(r"\dfrac{3}{4}") == "3/4"
  assert normalize("1,000.0") == "1000" and normalize(r"\text{5}.") == "5" and normalize("$x^2$") == "x^2"
  assert normalize(None) is None and normalize("  ") is None


# ------------------------------------------------------------------------------------------------ real sampler
@pytest.fixture(scope="module")
def backend_factory():
  from jaxeff.config import ModelConfig
  from jaxeff.generation.sampler import Sampler
  from jaxeff.models import init_params
  from jaxeff.tasks.arith import seersc_prompting
  from jaxeff.tokenizer import ByteTokenizer

  cfg = ModelConfig.tiny(max_position_embeddings=128)
  params = init_params(cfg, jax.random.key(0), std=0.5)
  sampler = Sampler(cfg, params)

  def make(**over):
    return S.SamplerBackend(
      sampler, ByteTokenizer(), seersc_prompting(s2_max_tokens=12, **over), key=jax.random.key(3)
    )

  return cfg, params, make


def test_sampler_backend_streams_are_shared_and_confidence_is_teacher_forced(backend_factory):
  from jaxeff.models import forward
  from jaxeff.tasks.arith import ArithProblem, queries
  from jaxeff.tokenizer import ByteTokenizer

  cfg, params, make = backend_factory
  qs = queries([ArithProblem((1, 2, 3)), ArithProblem((4, 0, 9, 9))], start_id=5)
  sc = S.run_batch(S.SC(n=4), qs, make().register(qs))
  b = make().register(qs)
  esc = S.run_batch(S.ESC(n=4, window=1, form="sliding"), qs, b)  # stops after 1 sample: the first of SC's
  asc = S.run_batch(S.ASC(n=4, threshold=0.999), qs, make().register(qs))  # never confident by 4: all 4, one by one
  for q in range(2):
    assert asc.records[q].s2_samples == 4 and asc.records[q].calls == 4
    assert asc.records[q].s2_tokens == sc.records[q].s2_tokens  # the same four samples, drawn sequentially
    assert esc.records[q].s2_tokens <= sc.records[q].s2_tokens
  assert sc.summary()["s2_tokens"] == sum(c.generated_tokens for c in sc.calls)

  # System-1 confidence = exp(mean raw log-softmax of the answer tokens), recomputed by a teacher-forced forward
  tok = ByteTokenizer()
  out, _ = make().register(qs).sample([S.Request(5, 1, 3, 0)])
  prompt = tok.encode(qs[0].payload + "DA:")
  for smp in out[0]:
    gen = tok.encode(smp.text, add_bos=False)
    assert smp.tokens == 1 and len(gen) <= 1  # s1_max_tokens = 1
    if not gen:
      continue  # a non-byte token (e.g. EOS) decodes to ""
    seq = np.asarray([prompt + gen])
    logits, _ = forward(params, seq, np.arange(seq.shape[1])[None], config=cfg)
    lp = np.asarray(jax.nn.log_softmax(logits[0, len(prompt) - 1]))[gen[0]]
    assert S.confidence(smp.answer_logprobs) == pytest.approx(math.exp(lp), rel=1e-4)


def test_wordmath_problems_are_distinct_disjoint_and_correct():
  from jaxeff.tasks import wordmath as W

  test = W.distinct_problems(60, seed=1)
  dev = W.distinct_problems(40, seed=2, exclude={p.text for p in test})
  assert len({p.text for p in test}) == 60 and not {p.text for p in test} & {p.text for p in dev}
  assert all(p.split == "validation" for p in test + dev)
  for p in test:  # the gold answer is the expression's value, written out in the text's numbers
    nums = [int(x) for x in p.expression.replace("+", " ").replace("-", " ").replace("*", " ").split()]
    assert all(str(x) in p.text for x in nums)
    a, op, b = p.expression.split()[:3]
    if p.kind != "two_step":
      assert p.answer == {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
  assert {p.kind for p in test} == {"add", "sub", "mul", "two_step"}
  with pytest.raises(ValueError, match="split"):
    W.sample_problems(2, split="test")


def test_wordmath_kinds_and_demonstrations():
  from types import SimpleNamespace

  from jaxeff.tasks import wordmath as W

  mul = W.distinct_problems(30, seed=3, kinds=("mul",))
  assert {p.kind for p in mul} == {"mul"} and all(p.answer == eval(p.expression) for p in mul)  # noqa: S307
  shots = W.demonstrations(4, kinds=("mul", "add"))
  assert [p.kind for p in shots] == ["mul", "add", "mul", "add"] and len({p.text for p in shots}) == 4
  assert all(p.split == "train" for p in shots) and not {p.text for p in shots} & {p.text for p in mul}
  assert W.worked_answer(shots[0]) == f"{shots[0].expression} = {shots[0].answer}. The answer is {shots[0].answer}."
  seen = []
  tok = SimpleNamespace(apply_chat_template=lambda msgs, add_generation_prompt: seen.append(msgs) or [0])
  W.chat_queries(mul[:1], tok, shots=shots[:2])
  assert [m["role"] for m in seen[0]] == ["user", "assistant", "user", "assistant", "user"]
  assert seen[0][1]["content"] == W.worked_answer(shots[0]) and seen[0][-1]["content"] == mul[0].text
  with pytest.raises(ValueError, match="also queries"):
    W.chat_queries([shots[0]], tok, shots=shots)
  with pytest.raises(ValueError, match="kinds"):
    W.distinct_problems(2, kinds=("div",))
