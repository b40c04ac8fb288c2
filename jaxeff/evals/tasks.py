"""RULER-style long-context tasks built with the model's own tokenizer at exact token lengths.

Every example is a prompt of exactly ``length`` tokens split in two: ``context`` (the chat header, the task
instruction and the document: what a question-agnostic press compresses at prefill) and ``question`` (the
question, the chat template's assistant header and an answer prefix). Tasks (RULER, arXiv 2404.06654, §3):

* ``niah_single``: one needle "One of the special magic numbers for {key} is: {value}." in prose.
* ``niah_multikey``: four needles with distinct keys (three distractors); the question names one key.
* ``niah_multivalue``: four needles with one key and four values; all four must be returned.
* ``vt`` (variable tracking): a chain ``VAR A = 12345``, ``VAR B = VAR A``, ... (4 hops) spread through the
  prose; every variable bound to the value must be returned.
* ``cwe`` (common-word extraction): a numbered list in which 10 words appear 30 times and the others 3 times;
  the 10 common words must be returned. The list is the whole document.
* ``qa``: a question about one section of the Python documentation, the gold section placed at a random depth
  among distractor sections that do not contain the answer (RULER's QA with distractor paragraphs; the
  questions are written for this harness, ``QA_ITEMS``).

The haystack is English prose from the Python documentation that ships with every Python
(``pydoc_data.topics``), shuffled by paragraph with the example's seed; never the tasks' own templates, which
Judge Q's training data must not contain either. Needles sit at evenly spread depths (one needle: a seeded
uniform depth). Pieces are tokenized separately at line boundaries and concatenated, so the length is exact
and every needle is whole; the haystack is cut at the token level to fit.

Scoring (RULER): ``string_match_all`` = the fraction of references found in the output (case-insensitive);
``string_match_part`` (QA) = 1 when any reference is found.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Sequence

import numpy as np

TASKS = ("niah_single", "niah_multikey", "niah_multivalue", "vt", "cwe", "qa")
# Tokens generated per task (RULER's are larger; these cover the answers with room to spare).
MAX_NEW_TOKENS = {"niah_single": 12, "niah_multikey": 12, "niah_multivalue": 40, "vt": 24, "cwe": 48, "qa": 16}

NIAH_INSTRUCTION = (
  "Some special magic numbers are hidden within the following text. Make sure to memorize it. "
  "I will quiz you about the numbers afterwards.\n"
)
VT_INSTRUCTION = "Memorize and track the chain(s) of variable assignment hidden in the following text.\n"
CWE_INSTRUCTION = "Below is a numbered list of words. In these words, some appear more often than others. Memorize the ones that appear most often.\n"
QA_INSTRUCTION = "Answer the question based on the given documents. Only give me the answer and do not output any other words.\n\nThe following are given documents.\n\n"

# (documentation topic, question, references): each reference occurs in the topic's text.
QA_ITEMS = (
  ("pass", 'What kind of operation is the "pass" statement?', ("null operation",)),
  ("assert", 'Which exception does a failing "assert" statement raise?', ("AssertionError",)),
  ("del", "Which exception is raised when a deleted name is unbound?", ("NameError",)),
  ("return", 'In a generator function, which exception does "return" cause to be raised?', ("StopIteration",)),
  ("raise", 'Which exception is raised by a bare "raise" when there is no active exception?', ("RuntimeError",)),
  ("lambda", "What kind of functions do lambda expressions create?", ("anonymous",)),
  ("integers", "Apart from what, is there no limit for the length of integer literals?", ("memory",)),
  ("imaginary", "What is the real part of the complex number an imaginary literal yields?", ("0.0",)),
  ("truth", 'Besides "__bool__()", which method returning zero makes an object false?', ("__len__",)),
  ("bltin-ellipsis-object", 'Which slicing-related object is written as "..."?', ("Ellipsis",)),
  ("global", 'For how much of the code does a "global" statement hold?', ("entire current code block",)),
  ("nonlocal", 'Which bindings does "nonlocal" exclude when it looks up the enclosing scope?', ("globals",)),
)


@dataclasses.dataclass(frozen=True)
class Example:
  """One long-context example: ``context + question`` is the prompt (exactly ``length`` tokens).

  Attributes:
    task, length, index: what it is (``index``: the example's number in its cell; it seeds the example).
    context: token ids compressed at prefill in the question-agnostic protocol.
    question: token ids appended after compression (the question-aware protocol prefills both together).
    references: the strings the answer must contain.
    metric: ``'all'`` (string_match_all) or ``'part'`` (string_match_part).
    needles: token spans ``(start, end)`` of the inserted needles (or the QA gold section) in ``context``.
    max_new_tokens: tokens to generate.
  """

  task: str
  length: int
  index: int
  context: tuple[int, ...]
  question: tuple[int, ...]
  references: tuple[str, ...]
  metric: str
  needles: tuple[tuple[int, int], ...]
  max_new_tokens: int

  @property
  def prompt(self) -> list[int]:
    return list(self.context) + list(self.question)


def score(prediction: str, references: Sequence[str], metric: str = "all") -> float:
  r"""RULER's string match: ``all``: $\frac{1}{|R|}\sum_{r\in R} [r \subseteq y]$; ``part``: $\max_r [r \subseteq y]$
  (case-insensitive substring tests).

  Example:
    >>> score("The numbers are 123 and 456.", ["123", "789"])
    0.5
    >>> score("It is a null operation", ["null operation", "no-op"], "part")
    1.0
  """
  if not references:
    raise ValueError("score needs at least one reference")
  pred = prediction.lower()
  hits = [r.lower() in pred for r in references]
  if metric == "all":
    return float(np.mean(hits))
  if metric == "part":
    return float(any(hits))
  raise ValueError(f"metric must be 'all' or 'part', got {metric!r}")


# ------------------------------------------------------------------------------------------ text sources
@functools.lru_cache(maxsize=1)
def documentation_sections() -> dict[str, str]:
  """The Python documentation topics (``pydoc_data.topics``: English prose with code, PSF licence)."""
  import pydoc_data.topics as topics

  return dict(topics.topics)


@functools.lru_cache(maxsize=1)
def haystack_paragraphs() -> tuple[str, ...]:
  """Paragraphs of the documentation prose (blank-line separated, whitespace-normalised, >= 40 characters)."""
  out = []
  for text in documentation_sections().values():
    for para in re.split(r"\n\s*\n", text):
      para = " ".join(para.split())
      if len(para) >= 40 and not set(para) <= set("*=-~ "):
        out.append(para)
  return tuple(out)


def disjoint_training_texts(max_documents: int | None = None) -> list[str]:
  """Text for training what is evaluated here (Judge Q's self-generated data): the Python standard library's
  train-split sources *without* ``pydoc_data`` (whose documentation prose is this harness's haystack), so the
  training data never contains an evaluation context (``tests/evals`` checks it)."""
  from jaxeff.training import data as data_lib

  files = [f for f in data_lib.python_stdlib_files("train") if "pydoc_data" not in f.parts]
  return [f.read_text(encoding="utf-8", errors="replace") for f in files[:max_documents]]


@functools.lru_cache(maxsize=1)
def _word_pool() -> tuple[str, ...]:
  words = sorted({w.lower() for w in re.findall(r"\b[a-zA-Z]{4,9}\b", " ".join(haystack_paragraphs()))})
  return tuple(words)


# ------------------------------------------------------------------------------------------ building
class _Builder:
  """Token pieces of one prompt: header + document (+ needles) + question, cut to an exact length."""

  def __init__(self, tokenizer, chat: bool):
    self.tok, self.chat = tokenizer, chat

  def enc(self, text: str) -> list[int]:
    return self.tok.encode(text, add_bos=False)

  def frame(self, instruction: str, question: str, answer_prefix: str) -> tuple[list[int], list[int]]:
    """(header ids, question ids): the chat template around the user turn, split where the document goes."""
    if self.chat:
      marker = "\x00DOC\x00"
      rendered = self.tok.render_chat([{"role": "user", "content": instruction + marker + "\n" + question}])
      head, tail = rendered.split(marker)
      return self.bos() + self.enc(head), self.enc(tail + answer_prefix)
    return self.bos() + self.enc(instruction), self.enc("\n" + question + " " + answer_prefix)

  def bos(self) -> list[int]:
    """What the tokenizer puts in front of plain text (BOS for jaxeff's byte models); nothing for chat, whose
    template writes its own header (transformers' ``apply_chat_template`` adds no special tokens either)."""
    return [] if self.chat else list(self.tok.encode(""))

  def filler(self, rng: np.random.Generator, exclude: Sequence[str] = ()) -> list[list[int]]:
    """Shuffled haystack paragraphs (each ending in a newline) as token lists, lazily enough for 8K+."""
    paras = haystack_paragraphs()
    order = rng.permutation(len(paras))
    banned = [e.lower() for e in exclude]
    return (self.enc(paras[i] + "\n") for i in order if not any(b in paras[i].lower() for b in banned))

  def document(self, budget: int, needles: list[list[int]], depths: Sequence[float], pieces) -> tuple[list[int], list]:
    """A document of exactly ``budget`` tokens: filler pieces with ``needles`` inserted at ``depths`` (fractions)."""
    need = sum(len(n) for n in needles)
    fill_budget = budget - need
    if fill_budget < 0:
      raise ValueError(f"the needles alone ({need} tokens) exceed the document budget ({budget})")
    fill: list[list[int]] = []
    total = 0
    for p in pieces:
      if total >= fill_budget:
        break
      fill.append(p)
      total += len(p)
    if total < fill_budget:
      raise ValueError(f"not enough haystack text for {fill_budget} tokens")
    flat_cut = total - fill_budget  # trim the last piece so the filler is exact
    if flat_cut:
      fill[-1] = fill[-1][: len(fill[-1]) - flat_cut]
      if not fill[-1]:
        fill.pop()
    # insert needles between pieces at the requested depths (in filler tokens)
    bounds = np.cumsum([0] + [len(p) for p in fill])
    slots = [int(np.argmin(np.abs(bounds - d * fill_budget))) for d in depths]
    doc: list[int] = []
    spans = []
    order = sorted(range(len(needles)), key=lambda j: slots[j])
    j = 0
    for i in range(len(fill) + 1):
      while j < len(order) and slots[order[j]] == i:
        spans.append((order[j], len(doc), len(doc) + len(needles[order[j]])))
        doc += needles[order[j]]
        j += 1
      if i < len(fill):
        doc += fill[i]
    spans = [(s, e) for _, s, e in sorted(spans)]
    return doc, spans


def _key(rng) -> str:
  pool = _word_pool()
  return f"{pool[rng.integers(len(pool))]}-{pool[rng.integers(len(pool))]}"


def _number(rng, digits: int = 7) -> str:
  return str(int(rng.integers(10 ** (digits - 1), 10**digits)))


def make_example(tokenizer, task: str, length: int, index: int, *, seed: int = 0, chat: bool | None = None) -> Example:
  """Build example ``index`` of ``task`` at exactly ``length`` prompt tokens (deterministic in the arguments).

  Args:
    tokenizer: the model's tokenizer (``jaxeff.tokenizer.HFTokenizer``; ``encode``, ``render_chat``).
    task: one of ``TASKS``.
    length: total prompt tokens (context + question).
    index, seed: the example's seed is ``(seed, task, length, index)``.
    chat: wrap in the tokenizer's chat template (default: when it has one).

  Example:
    >>> from jaxeff.tokenizer import ByteTokenizer
    >>> ex = make_example(ByteTokenizer(), "niah_single", 1024, 0)
    >>> len(ex.prompt)
    1024
  """
  if task not in TASKS:
    raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
  if length < 256:
    raise ValueError(f"length must be >= 256 tokens, got {length}")
  chat = bool(getattr(tokenizer, "chat_template", None)) if chat is None else chat
  rng = np.random.default_rng([seed, TASKS.index(task), length, index])
  b = _Builder(tokenizer, chat)
  meta = "all"
  if task in ("niah_single", "niah_multikey", "niah_multivalue"):
    n = 1 if task == "niah_single" else 4
    keys = [_key(rng) for _ in range(n)] if task == "niah_multikey" else [_key(rng)] * n
    values = [_number(rng) for _ in range(n)]
    while len(set(values)) < n or len(set(keys)) < (n if task == "niah_multikey" else 1):
      keys = [_key(rng) for _ in range(n)] if task == "niah_multikey" else [_key(rng)] * n
      values = [_number(rng) for _ in range(n)]
    needles = [b.enc(f"One of the special magic numbers for {k} is: {v}.\n") for k, v in zip(keys, values)]
    target = int(rng.integers(n))
    key = keys[target]
    if task == "niah_multivalue":
      q = f"What are all the special magic numbers for {key} mentioned in the provided text?"
      prefix = f"The special magic numbers for {key} mentioned in the provided text are"
      refs = tuple(values)
    else:
      q = f"What is the special magic number for {key} mentioned in the provided text?"
      prefix = f"The special magic number for {key} mentioned in the provided text is"
      refs = (values[target],)
    head, question = b.frame(NIAH_INSTRUCTION, q, prefix)
    depths = [float(rng.uniform(0.05, 0.95))] if n == 1 else list(rng.permutation(np.linspace(0.1, 0.9, n)))
    pieces = b.filler(rng, exclude=values)
  elif task == "vt":
    names = []
    while len(names) < 5:
      name = "".join(rng.choice(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"), 5))
      if name not in names:
        names.append(name)
    value = _number(rng, 5)
    lines = [f"VAR {names[0]} = {value}\n"] + [f"VAR {names[i]} = VAR {names[i - 1]}\n" for i in range(1, 5)]
    needles = [b.enc(line) for line in lines]
    q = f"Find all variables that are assigned the value {value} in the text above."
    prefix = f"Answer: According to the chain(s) of variable assignment in the text above, 5 variables are assigned the value {value}, they are:"
    head, question = b.frame(VT_INSTRUCTION, q, prefix)
    depths = list(np.linspace(0.1, 0.9, 5))
    refs = tuple(names)
    pieces = b.filler(rng, exclude=[value, *names])
  elif task == "cwe":
    pool = _word_pool()
    q = "What are the 10 most common words in the above list?"
    prefix = "Answer: The top 10 words that appear most often in the list are:"
    head, question = b.frame(CWE_INSTRUCTION, q, prefix)
    budget = length - len(head) - len(question)
    # RULER: 10 common words x 30 and the rest x 3 at long lengths; shorter lists scale the common count down
    # (never below 6, twice the rare count) so that the list fits the length.
    per_item = np.mean([len(b.enc(f"{100 + i}. {pool[i * 37 % len(pool)]}\n")) for i in range(50)])
    n_items = int(0.9 * budget / per_item)
    freq = int(np.clip(n_items // 20, 6, 30))
    n_rare = max(0, (n_items - 10 * freq) // 3)
    words = list(rng.permutation(len(pool)))
    common, rare = [pool[i] for i in words[:10]], [pool[i] for i in words[10 : 10 + n_rare]]
    items = common * freq + rare * 3
    rng.shuffle(items)
    items += [pool[i] for i in words[10 + n_rare :]]  # then words seen once, cut where the length ends
    pieces = (b.enc(f"{i + 1}. {w}\n") for i, w in enumerate(items))
    needles, depths = [], []
    refs = tuple(common)
  else:  # qa
    topic, q, refs = QA_ITEMS[index % len(QA_ITEMS)]
    text = documentation_sections()[topic]
    paras = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]
    gold, k = [], 0
    while k < len(paras) and (not any(r.lower() in " ".join(gold).lower() for r in refs) or len(" ".join(gold)) < 400):
      gold.append(paras[k])
      k += 1
    needles = [b.enc("Document (gold):\n" + "\n".join(gold) + "\n\n")]
    head, question = b.frame(QA_INSTRUCTION, "Question: " + q, "Answer:")
    depths = [float(rng.uniform(0.05, 0.95))]
    pieces = b.filler(rng, exclude=list(refs))
    meta = "part"
  budget = length - len(head) - len(question)
  doc, spans = b.document(budget, needles, depths, pieces)
  context = head + doc
  spans = tuple((s + len(head), e + len(head)) for s, e in spans)
  ex = Example(
    task=task,
    length=length,
    index=index,
    context=tuple(int(t) for t in context),
    question=tuple(int(t) for t in question),
    references=tuple(refs),
    metric=meta,
    needles=spans,
    max_new_tokens=MAX_NEW_TOKENS[task],
  )
  if len(ex.prompt) != length:  # an invariant of the construction above
    raise AssertionError(f"{task} example has {len(ex.prompt)} tokens, not {length}")
  return ex


def make_examples(
  tokenizer, task: str, length: int, n: int, *, seed: int = 0, chat: bool | None = None
) -> list[Example]:
  """Examples ``0 .. n-1`` of one (task, length) cell (see ``make_example``)."""
  return [make_example(tokenizer, task, length, i, seed=seed, chat=chat) for i in range(n)]
