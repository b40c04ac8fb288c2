r"""The code-translation study on a real instruct model: a split by problem, chat-format examples, a greedy
translator, snippet data written by the model, and the three training arms (Zhang et al., arXiv 2510.15004).

The paper's claim: fine-tuning on program-aligned (PA) pairs plus snippet-aligned (SA) pairs that an LLM writes,
in two stages, beats PA-only fine-tuning by up to +3.78 points of pass@1 on TransCoder-test. The pieces here
make that comparison runnable with any jaxeff model (``benchmarks/bench_codetrans.py --real-model`` runs it on
SmolLM2-135M-Instruct):

* ``split_by_problem``: TransCoder-test problems split by a hash of their name (a problem is in exactly one
  side: held-out problems never reach training, in any language).
* ``chat_prompt`` / ``chat_example``: the model's chat template, the user turn asking for the translation of a
  fenced function and the assistant turn opened with the target fence; the loss covers the target code, the
  closing fence and the end-of-turn token. The same prompt serves training and evaluation.
* ``ChatTranslator``: greedy (or sampled) translation through jaxeff's sampler in batches; the answer up to the
  closing fence, then its first function (``extract_function``). It has the evaluator's ``Generator`` signature.
* ``statement_prompts`` / ``SAGenerator(mode="per_statement")`` (``augment.py``): the spec's ``from_program``
  reading with jaxeff doing the split: each statement of a training program goes to the model on its own, and
  the answers are validated (syntax of the target where checkable, at most ``max_lines`` lines) and
  de-duplicated. A small model cannot answer the JSON formats of the other two modes (measured: 0 parsable of
  6 answers from SmolLM2-135M-Instruct).
* ``arm_plan`` / ``train_arm``: the arms at equal PA data: ``pa`` (``pa_steps`` on PA), ``pa+sa`` (one stage on the mixture
  with PA weight ``w``, ``pa_steps / w`` steps: the same PA rows in expectation, plus SA), ``sa->pa`` (``sa_steps``
  on SA, then ``pa_steps`` on PA). UNVERIFIED: the paper's stage order and mixing (its abstract gives neither);
  ``pa->sa`` is available as an option and measures forgetting rather than augmentation.

Example:
  >>> train, test = split_by_problem(["A", "B", "C", "D", "E", "F"], test_fraction=0.5)
  >>> sorted(train + test) == list("ABCDEF") and not set(train) & set(test)
  True
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Any

from jaxeff.codetrans.train import LANG_NAMES, extract_function, run_stages, target_masked

ARMS = ("pa", "pa+sa", "sa->pa", "pa->sa")


def _stem(p: Any) -> str:
  return p if isinstance(p, str) else p.stem


def split_by_problem(problems: Sequence[Any], *, test_fraction: float = 0.4, salt: str = "jaxeff-codetrans"):
  """``(train, test)``: each problem (a ``Problem`` or a stem string) goes to test when
  ``sha256(salt + stem)`` read as a fraction of 2**64 is below ``test_fraction``; deterministic, independent of
  the order and of the direction (the same stem lands on the same side in every language pair)."""
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
  train, test = [], []
  for p in problems:
    h = int.from_bytes(hashlib.sha256((salt + _stem(p)).encode()).digest()[:8], "big") / 2.0**64
    (test if h < test_fraction else train).append(p)
  return train, test


def _user_turn(src_code: str, src_lang: str, tgt_lang: str) -> str:
  return f"Translate this {LANG_NAMES[src_lang]} function to {LANG_NAMES[tgt_lang]}.\n```{src_lang}\n{src_code.strip()}\n```"


def chat_prompt(tokenizer, src_code: str, src_lang: str, tgt_lang: str) -> list[int]:
  """Token ids: the chat-templated user turn (``"Translate this Java function to Python.\n```java\n...\n```"``)
  and the assistant turn opened with the target fence (``"```python\n"``)."""
  return _fenced_chat(tokenizer, _user_turn(src_code, src_lang, tgt_lang), tgt_lang)


def _fenced_chat(tokenizer, message: str, tgt_lang: str) -> list[int]:
  """The chat-templated user ``message`` and the assistant turn opened with the ``tgt_lang`` code fence."""
  if not getattr(tokenizer, "chat_template", None):
    raise ValueError("chat_prompt needs a tokenizer with a chat template (an instruct model's folder)")
  ids = tokenizer.apply_chat_template([{"role": "user", "content": message}])
  return list(ids) + tokenizer.encode(f"```{tgt_lang}\n", add_bos=False)


def chat_example(tokenizer, src: str, tgt: str, src_lang: str, tgt_lang: str):
  """(ids, loss mask over next-token targets): ``chat_prompt`` + the target code + a closing fence + the
  end-of-turn token; the mask is 1 on the target's tokens (the fence and end of turn included)."""
  prompt = chat_prompt(tokenizer, src, src_lang, tgt_lang)
  return target_masked(prompt, tokenizer.encode(tgt.strip() + "\n```", add_bos=False) + [tokenizer.eos_id])


def answer_code(text: str, lang: str) -> str:
  """The code of an answer that started inside a fence: up to the closing fence, then its first function."""
  return extract_function(text.split("```")[0], lang)


class ChatTranslator:
  """A ``Generator`` (``(problems, n) -> n candidates each``) for an instruct model: ``chat_prompt`` per problem,
  ``n`` samples sharing one prefill (greedy when ``temperature`` is 0), ``batch_size`` problems per sampler
  call, the code extracted with ``answer_code``. ``last_texts`` keeps the raw answers of the last call."""

  def __init__(
    self,
    sampler,
    tokenizer,
    *,
    max_new_tokens: int = 320,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int = 16,
  ):
    self.sampler, self.tok = sampler, tokenizer
    self.max_new_tokens, self.temperature, self.top_p, self.seed = max_new_tokens, temperature, top_p, seed
    self.batch_size = batch_size
    self.last_texts: list[list[str]] = []

  def __call__(self, problems, n: int) -> list[list[str]]:
    import jax

    from jaxeff.generation.sampler import SamplingParams

    stops = tuple(int(t) for t in (self.sampler.config.stop_token_ids or (self.tok.eos_id,)))
    sp = SamplingParams(
      max_new_tokens=self.max_new_tokens,
      temperature=self.temperature,
      top_p=self.top_p,
      n_samples=n,
      stop_tokens=stops,
      pad_id=stops[0],
    )
    out, self.last_texts = [], []
    for a in range(0, len(problems), self.batch_size):
      chunk = problems[a : a + self.batch_size]
      prompts = [chat_prompt(self.tok, p.src_code, p.src_lang, p.tgt_lang) for p in chunk]
      res = self.sampler.generate(prompts, sp, jax.random.fold_in(jax.random.key(self.seed), a))
      for b, p in enumerate(chunk):
        texts = [self.tok.decode(res.tokens[b, s, : res.lengths[b, s]]) for s in range(n)]
        self.last_texts.append(texts)
        out.append([answer_code(t, p.tgt_lang) for t in texts])
    return out


def split_statements(code: str, lang: str) -> list[str]:
  """A function's statements for per-statement SA generation: its non-blank lines, stripped, without lines that
  are only braces or comments (C++ / Java ``//``, Python ``#``)."""
  out = []
  for line in code.splitlines():
    s = line.strip()
    if not s or set(s) <= set("{}();") or s.startswith("//" if lang != "python" else "#"):
      continue
    out.append(s)
  return out


_HEADER_STARTS = ("if", "else", "for", "while", "switch", "do", "return", "case", "catch", "try")


def opens_block(statement: str, lang: str) -> bool:
  """True when a statement opens a block (C++ / Java ``... {``, Python ``...:``): its translation is one header
  line, and what a model writes after that line is a body it made up."""
  s = statement.rstrip()
  return s.endswith(":") if lang == "python" else s.endswith("{")


def statement_pair_ok(src: str, tgt: str, src_lang: str, tgt_lang: str) -> bool:
  """A per-statement answer's shape check: the translation may define a function (``def`` / a signature with a
  body) only when the statement is a function header (``name ( ... ) {`` without a control keyword, or a Python
  ``def``). Small models wrap ordinary statements in made-up functions (``int m = 1 ;`` ->
  ``def set_m(): ...``); those answers are rejected."""
  s = src.strip()
  if src_lang == "python":
    header = s.startswith("def ")
  else:
    word = s.split("(")[0].split()
    header = s.endswith("{") and "(" in s and bool(word) and word[0] not in _HEADER_STARTS and "=" not in s
  t = tgt.lstrip()
  defines = (
    t.startswith("def ")
    if tgt_lang == "python"
    else ("(" in t.split("\n")[0] and t.split("\n")[0].rstrip().endswith("{") and not t.startswith(_HEADER_STARTS))
  )
  return header or not defines


def statement_prompts(tokenizer, statements: Sequence[str], src_lang: str, tgt_lang: str) -> list[list[int]]:
  """Chat prompts asking for one statement's translation (the assistant turn opened with the target fence)."""
  src, tgt = LANG_NAMES[src_lang], LANG_NAMES[tgt_lang]
  return [
    _fenced_chat(tokenizer, f"Translate this {src} statement to {tgt}.\n```{src_lang}\n{s}\n```", tgt_lang)
    for s in statements
  ]


def sampler_batch_llm(sampler, tokenizer, src_lang: str, tgt_lang: str, *, max_new_tokens: int = 48, batch_size=32):
  """``statements -> answers`` for ``SAGenerator(mode="per_statement", batch_llm=...)``: greedy, batched,
  each answer cut at its closing fence."""
  import jax

  from jaxeff.generation.sampler import SamplingParams

  stops = tuple(int(t) for t in (sampler.config.stop_token_ids or (tokenizer.eos_id,)))
  sp = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, stop_tokens=stops, pad_id=stops[0])

  def run(statements: Sequence[str]) -> list[str]:
    answers = []
    for a in range(0, len(statements), batch_size):
      prompts = statement_prompts(tokenizer, statements[a : a + batch_size], src_lang, tgt_lang)
      res = sampler.generate(prompts, sp, jax.random.key(0))
      answers += [
        tokenizer.decode(res.tokens[b, 0, : res.lengths[b, 0]]).split("```")[0].strip() for b in range(len(prompts))
      ]
    return answers

  return run


@dataclasses.dataclass(frozen=True)
class ArmPlan:
  """One arm: the stages as ``(corpora, weights, steps)`` (the second stage starts from the first's export)."""

  name: str
  stages: tuple[tuple[tuple[str, ...], tuple[float, ...], int], ...]

  @property
  def steps(self) -> int:
    return sum(s[2] for s in self.stages)


def arm_plan(arm: str, pa_npz: str, sa_npz: str, *, pa_steps: int, sa_steps: int, pa_weight: float = 2 / 3):
  """The stages of ``arm`` (module docstring): every arm sees ``pa_steps`` batches' worth of PA rows."""
  if arm not in ARMS:
    raise ValueError(f"arm must be one of {ARMS}, got {arm!r}")
  if pa_steps < 1 or sa_steps < 1 or not 0.0 < pa_weight < 1.0:
    raise ValueError("pa_steps and sa_steps must be >= 1 and pa_weight in (0, 1)")
  pa, sa = (f"npz:{pa_npz}",), (f"npz:{sa_npz}",)
  if arm == "pa":
    return ArmPlan(arm, ((pa, (1.0,), pa_steps),))
  if arm == "pa+sa":
    mix = (f"npz:{pa_npz}", f"npz:{sa_npz}")
    return ArmPlan(arm, ((mix, (pa_weight, 1.0 - pa_weight), round(pa_steps / pa_weight)),))
  if arm == "sa->pa":
    return ArmPlan(arm, ((sa, (1.0,), sa_steps), (pa, (1.0,), pa_steps)))
  return ArmPlan(arm, ((pa, (1.0,), pa_steps), (sa, (1.0,), sa_steps)))


def train_arm(plan: ArmPlan, base, workdir, *, progress: bool = False):
  """Run ``plan``'s stages with the trainer from ``base`` (a ``TrainConfig`` with ``init_from`` the model folder,
  ``tokenizer="init_from"``, and the trainable layers); stage k in ``workdir/stage{k}`` (each resumable,
  ``train.run_stages``). Returns the last stage's ``TrainResult``."""
  return run_stages([(c, w, n, None) for c, w, n in plan.stages], base, workdir, progress=progress)[-1]
