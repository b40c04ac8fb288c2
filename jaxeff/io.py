"""Neutral file helpers shared by the command line, TC-Bench and code translation: JSONL read with every line
checked (errors name the line) and atomic JSONL writes.

Example:
  >>> import tempfile, pathlib
  >>> p = write_jsonl(pathlib.Path(tempfile.mkdtemp()) / "x.jsonl", [{"id": 1}])
  >>> read_jsonl(p, ("id",))
  [{'id': 1}]
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


def read_jsonl(path: str | os.PathLike, required: Sequence[str] = ()) -> list[dict[str, Any]]:
  """Objects of a JSONL file; every required key checked; errors name the line."""
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"no such file: {path}")
  out = []
  for i, line in enumerate(path.read_text().splitlines(), 1):
    if not line.strip():
      continue
    try:
      obj = json.loads(line)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}:{i}: not valid JSON ({e.msg})") from None
    if not isinstance(obj, dict):
      raise ValueError(f"{path}:{i}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in required if k not in obj]
    if missing:
      raise ValueError(f"{path}:{i}: missing keys {missing}")
    out.append(obj)
  return out


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> Path:
  """Write atomically (temporary file, then rename)."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(path.suffix + ".tmp")
  tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
  os.replace(tmp, path)
  return path
