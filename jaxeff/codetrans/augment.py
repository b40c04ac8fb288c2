r"""Snippet-alignment (SA) augmentation: an LLM splits program-aligned (PA) pairs into aligned snippets, which are
validated, de-duplicated and written as JSONL (Zhang et al., arXiv 2510.15004).

Only the abstract is available, so the generator prompt, the granularity and the filters are UNVERIFIED and are
options here (the spec's labelled hypothesis):

* ``SAGenerator(llm, template, mode="from_pair")``: the LLM (any ``Callable[[str], str]``: a jaxeff sampler
  wrapper, an external API client, a stub in tests) receives both programs and must answer a JSON list of
  ``{"src": ..., "tgt": ...}`` covering the program in order; ``mode="from_program"`` gives only the source and
  asks for each snippet's translation (the target-substring check is then skipped). An unparsable answer is
  rejected whole and counted.
* ``mode="per_statement"``: jaxeff splits each source program into statements (``study.split_statements``) and
  the model translates each one on its own (plain code, no JSON: the form a small model can answer);
  ``batch_llm`` (``statements -> answers``, e.g. ``study.sampler_batch_llm``) answers them in batches. The
  target check is skipped; a block header keeps its answer's first line (the rest is a body the model made up);
  answers longer than ``max_lines`` (default 1) lines are rejected (a statement translates to a line; longer
  answers are the model wandering off), and so are answers that define a function the statement does not
  (``study.statement_pair_ok``).
* ``validate_sa``: both sides non-empty; each side a contiguous substring of its program after collapsing
  whitespace runs; optional in-order, non-overlapping coverage; optional syntax check where a snippet is a
  complete statement or block (Python ``ast.parse``; C++ ``g++ -fsyntax-only`` inside a function body; Java
  ``javac`` inside a method; the compiled checks are off by default); length bounds.
* De-duplication on whitespace-normalised text.

Example:
  >>> validate_sa(SAPair("x = 1", "int x = 1;"), "x = 1\nprint(x)", "int x = 1;\ncout << x;", src_lang="python")
  (True, 'ok')
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import shutil
from collections.abc import Callable, Sequence

DEFAULT_TEMPLATE = (
  "Split the following {src_lang} program and its {tgt_lang} translation into aligned snippets, in program order. "
  'Answer only a JSON list of objects {{"src": <{src_lang} snippet>, "tgt": <{tgt_lang} snippet>}}, each snippet '
  "copied exactly from its program.\n### {src_lang}\n{src}\n### {tgt_lang}\n{tgt}\n### JSON\n"
)
PROGRAM_TEMPLATE = (
  "Split the following {src_lang} program into statement-level snippets in order and translate each to {tgt_lang}. "
  'Answer only a JSON list of objects {{"src": ..., "tgt": ...}}.\n### {src_lang}\n{src}\n### JSON\n'
)


@dataclasses.dataclass(frozen=True)
class SAPair:
  src: str
  tgt: str


def _norm(s: str) -> str:
  return re.sub(r"\s+", " ", s).strip()


def _syntax_ok(code: str, lang: str) -> bool | None:
  """True / False when checkable, None when the snippet is not a complete unit (or the tool is missing)."""
  if lang == "python":
    if code.rstrip().endswith(":"):  # a block header on its own: parse it with an empty body
      code = code.rstrip() + "\n" + " " * (len(code) - len(code.lstrip()) + 2) + "pass"
    try:
      ast.parse(code)
      return True
    except SyntaxError:
      try:  # an indented block body
        ast.parse("if True:\n" + "\n".join("  " + line for line in code.splitlines()))
        return True
      except SyntaxError:
        return False
  tool = "g++" if lang == "cpp" else "javac"
  if shutil.which(tool) is None:
    return None
  from jaxeff.sandbox import syntax_ok  # model-written code: the compiler runs in the sandbox too

  if lang == "cpp":
    return syntax_ok("#include <bits/stdc++.h>\nusing namespace std;\nvoid __snippet() {\n" + code + "\n}\n", "cpp")
  return syntax_ok("import java.util.*;\nclass S { void snippet() {\n" + code + "\n} }\n", "java")


def validate_sa(
  pair: SAPair,
  src_prog: str,
  tgt_prog: str | None,
  *,
  src_lang: str = "python",
  tgt_lang: str = "cpp",
  syntax: Sequence[str] = ("python",),
  max_chars: int = 2000,
) -> tuple[bool, str]:
  """(ok, reason) for one snippet pair against its programs (``tgt_prog`` None skips the target check)."""
  if not pair.src.strip() or not pair.tgt.strip():
    return False, "empty side"
  if len(pair.src) > max_chars or len(pair.tgt) > max_chars:
    return False, "too long"
  if _norm(pair.src) not in _norm(src_prog):
    return False, "source snippet is not in the source program"
  if tgt_prog is not None and _norm(pair.tgt) not in _norm(tgt_prog):
    return False, "target snippet is not in the target program"
  for code, lang in ((pair.src, src_lang), (pair.tgt, tgt_lang)):
    if lang in syntax and _syntax_ok(code, lang) is False:
      return False, f"{lang} snippet does not parse"
  return True, "ok"


def in_order(pairs: Sequence[SAPair], src_prog: str, tgt_prog: str | None) -> bool:
  """Snippets appear in program order without overlap (on whitespace-normalised text)."""
  for side, prog in (("src", src_prog), ("tgt", tgt_prog)):
    if prog is None:
      continue
    text, at = _norm(prog), 0
    for p in pairs:
      k = text.find(_norm(getattr(p, side)), at)
      if k < 0:
        return False
      at = k + len(_norm(getattr(p, side)))
  return True


def parse_response(text: str) -> list[SAPair] | None:
  """The JSON list in an LLM answer (first '[' to last ']'), or None if it does not parse as a list of objects
  with string "src" and "tgt"."""
  a, b = text.find("["), text.rfind("]")
  if a < 0 or b <= a:
    return None
  try:
    obj = json.loads(text[a : b + 1])
  except json.JSONDecodeError:
    return None
  if not isinstance(obj, list) or not all(
    isinstance(x, dict) and isinstance(x.get("src"), str) and isinstance(x.get("tgt"), str) for x in obj
  ):
    return None
  return [SAPair(x["src"], x["tgt"]) for x in obj]


@dataclasses.dataclass
class SAReport:
  pairs: list[dict]
  responses: int = 0
  unparsable: int = 0
  rejected: dict = dataclasses.field(default_factory=dict)
  duplicates: int = 0


class SAGenerator:
  """Generate validated SA pairs from PA pairs with any LLM callable (see the module docstring)."""

  def __init__(
    self,
    llm: Callable[[str], str],
    template: str | None = None,
    *,
    mode: str = "from_pair",
    src_lang: str = "python",
    tgt_lang: str = "cpp",
    syntax: Sequence[str] = ("python",),
    coverage: bool = False,
    batch_llm: Callable[[list[str]], list[str]] | None = None,
    max_lines: int = 1,
  ):
    if mode not in ("from_pair", "from_program", "per_statement"):
      raise ValueError(f"mode must be 'from_pair', 'from_program' or 'per_statement', got {mode!r}")
    if mode == "per_statement" and batch_llm is None and llm is None:
      raise ValueError("mode='per_statement' needs batch_llm (statements -> answers) or llm")
    self.batch_llm, self.max_lines = batch_llm, max_lines
    self.llm, self.mode, self.src_lang, self.tgt_lang, self.syntax, self.coverage = (
      llm,
      mode,
      src_lang,
      tgt_lang,
      syntax,
      coverage,
    )
    self.template = template or (DEFAULT_TEMPLATE if mode == "from_pair" else PROGRAM_TEMPLATE)

  def generate(self, pa_pairs: Sequence[tuple[str, str]]) -> SAReport:
    if self.mode == "per_statement":
      return self._per_statement(pa_pairs)
    rep = SAReport(pairs=[])
    seen = set()
    for i, (src, tgt) in enumerate(pa_pairs):
      prompt = self.template.format(src_lang=self.src_lang, tgt_lang=self.tgt_lang, src=src, tgt=tgt)
      rep.responses += 1
      pairs = parse_response(self.llm(prompt))
      if pairs is None:
        rep.unparsable += 1
        continue
      tgt_prog = tgt if self.mode == "from_pair" else None
      if self.coverage and not in_order(pairs, src, tgt_prog):
        rep.rejected["out of order"] = rep.rejected.get("out of order", 0) + len(pairs)
        continue
      for p in pairs:
        self._accept(rep, seen, p, i, src, tgt_prog)
    return rep

  def _accept(self, rep: SAReport, seen: set, pair: SAPair, i: int, src_prog: str, tgt_prog: str | None) -> None:
    """Validate ``pair`` (from PA pair ``i``), de-duplicate it against ``seen`` and add it to ``rep``."""
    ok, why = validate_sa(pair, src_prog, tgt_prog, src_lang=self.src_lang, tgt_lang=self.tgt_lang, syntax=self.syntax)
    if not ok:
      rep.rejected[why] = rep.rejected.get(why, 0) + 1
      return
    key = (_norm(pair.src), _norm(pair.tgt))
    if key in seen:
      rep.duplicates += 1
      return
    seen.add(key)
    rep.pairs.append(
      {"pa_index": i, "src": pair.src, "tgt": pair.tgt, "src_lang": self.src_lang, "tgt_lang": self.tgt_lang}
    )

  def _per_statement(self, pa_pairs: Sequence[tuple[str, str]]) -> SAReport:
    from jaxeff.codetrans.study import opens_block, split_statements, statement_pair_ok

    todo = [(i, st) for i, (src, _) in enumerate(pa_pairs) for st in split_statements(src, self.src_lang)]
    ask = self.batch_llm or (lambda sts: [self.llm(st) for st in sts])
    answers = ask([st for _, st in todo]) if todo else []
    if len(answers) != len(todo):
      raise ValueError(f"batch_llm returned {len(answers)} answers for {len(todo)} statements")
    rep = SAReport(pairs=[], responses=len(todo))
    seen = set()
    for (i, st), ans in zip(todo, answers):
      tgt = ans.strip("\n")
      if opens_block(st, self.src_lang) and tgt:
        tgt = tgt.splitlines()[0]  # a block header translates to one header line; the rest is a made-up body
      pair = SAPair(st, tgt)
      if len(pair.tgt.splitlines()) > self.max_lines:
        rep.rejected["too many lines"] = rep.rejected.get("too many lines", 0) + 1
        continue
      if not statement_pair_ok(pair.src, pair.tgt, self.src_lang, self.tgt_lang):
        rep.rejected["defines a function the statement does not"] = (
          rep.rejected.get("defines a function the statement does not", 0) + 1
        )
        continue
      self._accept(rep, seen, pair, i, pa_pairs[i][0], None)
    return rep
