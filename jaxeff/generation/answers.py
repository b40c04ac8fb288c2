"""Answer extraction and normalisation for voting: boxed answers, last number, multiple-choice letter, marker.

SeerSC groups System-1 answers by their exact stripped string (entropy) and votes over *normalised* System-2
answers: two equivalence rules by design (see ``jaxeff.generation.seersc``). Extractors return ``None`` when a
text holds no answer; ``None`` never wins a vote.

Example:
  >>> extract_boxed(r"so x = \\boxed{\\frac{1}{2}}.")
  '\\\\frac{1}{2}'
  >>> normalize(extract_boxed(r"\\boxed{\\frac{1}{2}}"))
  '1/2'
  >>> last_number("3 apples and 1,250.0 pears")
  '1250'
"""

from __future__ import annotations

import re
from collections.abc import Callable

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")


def extract_boxed(text: str) -> str | None:
  r"""The content of the last ``\boxed{...}`` (or ``\fbox{...}``), braces matched; None if absent or unclosed.

  A bare ``\boxed 5`` (no brace) gives the token after it, as the Qwen2.5-Math parser does.
  """
  starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*", text)]
  if not starts:
    return None
  i = starts[-1]
  if i < len(text) and text[i] != "{":
    m = re.match(r"[^\s$]+", text[i:])
    return m.group(0) if m else None
  depth = 0
  for j in range(i, len(text)):
    if text[j] == "{":
      depth += 1
    elif text[j] == "}":
      depth -= 1
      if depth == 0:
        return text[i + 1 : j].strip()
  return None


def _canonical_number(s: str) -> str:
  s = s.replace(",", "")
  if "/" in s:
    return s
  try:
    v = float(s)
  except ValueError:
    return s
  if v == int(v) and abs(v) < 1e15:
    return str(int(v))
  return repr(v)


def last_number(text: str) -> str | None:
  """The last number in ``text`` (sign, thousands commas, decimals and a/b fractions), canonicalised."""
  found = _NUMBER.findall(text)
  return _canonical_number(found[-1]) if found else None


def choice_letter(text: str, letters: str = "ABCD") -> str | None:
  """A multiple-choice letter: ``\\boxed{C}``, "answer is (C)" / "answer: C", else the last standalone letter."""
  boxed = extract_boxed(text)
  if boxed is not None:
    m = re.fullmatch(rf"\(?\s*([{letters}])\s*\)?(?:\.|:.*)?", boxed.strip())
    if m:
      return m.group(1)
  m = re.findall(rf"answer\s*(?:is|:)?\s*\(?\s*([{letters}])\b", text, flags=re.IGNORECASE)
  if m:
    return m[-1].upper()
  m = re.findall(rf"(?<![A-Za-z])\(?([{letters}])\)?(?![A-Za-z])", text)
  return m[-1] if m else None


def after_marker(text: str, marker: str = "A:") -> str | None:
  """The word after the last ``marker`` (e.g. ``"... A:7"`` -> ``"7"``); None if no marker or nothing after it."""
  k = text.rfind(marker)
  if k < 0:
    return None
  m = re.match(r"\s*(\S+)", text[k + len(marker) :])
  return m.group(1) if m else None


def normalize(answer: str | None) -> str | None:
  r"""Light math normalisation for voting (a subset of the Qwen2.5-Math ``strip_string``): strip spaces, ``$``,
  ``\text{}``, ``\left``/``\right``, a trailing period; ``\frac{a}{b}`` / ``\dfrac`` -> ``a/b``; numbers
  canonical (``1,000.0`` -> ``1000``)."""
  if answer is None:
    return None
  s = answer.strip()
  s = re.sub(r"\\text\{([^}]*)\}", r"\1", s)
  s = s.replace("\\left", "").replace("\\right", "").replace("$", "").replace("\\!", "")
  s = re.sub(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}", r"\1/\2", s)
  s = re.sub(r"\s+", "", s).rstrip(".")
  if _NUMBER.fullmatch(s):
    s = _canonical_number(s)
  return s or None


EXTRACTORS: dict[str, Callable[[str], str | None]] = {
  "boxed": extract_boxed,
  "last_number": last_number,
  "choice": choice_letter,
  "marker": after_marker,
}


def get_extractor(name: str) -> Callable[[str], str | None]:
  """An extractor by name: 'boxed', 'last_number', 'choice' or 'marker' ("A:" by default)."""
  if name not in EXTRACTORS:
    raise ValueError(f"unknown answer extractor {name!r}; choose one of {sorted(EXTRACTORS)}")
  return EXTRACTORS[name]
