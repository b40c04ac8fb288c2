"""Neutral file helpers shared by the command line, TC-Bench and code translation: JSONL read with every line
checked (errors name the line), atomic JSONL writes, and an advisory lock on output folders.

Example:
  >>> import tempfile, pathlib
  >>> p = write_jsonl(pathlib.Path(tempfile.mkdtemp()) / "x.jsonl", [{"id": 1}])
  >>> read_jsonl(p, ("id",))
  [{'id': 1}]
"""

from __future__ import annotations

import contextlib
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


class FolderLocked(RuntimeError):
  """Another process is writing the same output folder."""


@contextlib.contextmanager
def locked_folder(path: str | os.PathLike, what: str = "jaxeff", name: str = ".jaxeff.lock"):
  """Hold an advisory lock on output folder ``path`` (created if needed) for the body: ``fcntl.flock`` on
  ``path/<name>`` (default ``.jaxeff.lock``; writers of different files in one folder use different names), which
  holds the writer's PID. A second writer fails at once with ``FolderLocked`` naming
  that PID (the lock dies with its process, so a crash never leaves the folder locked).

  Example:
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> with locked_folder(d):
    ...   with locked_folder(d):
    ...     pass
    Traceback (most recent call last):
    ...
    jaxeff.io.FolderLocked: ... is being written by another jaxeff process (PID ...); wait for it or use another folder
  """
  import fcntl

  folder = Path(path)
  if folder.exists() and not folder.is_dir():
    raise NotADirectoryError(f"{folder} exists and is not a folder")
  folder.mkdir(parents=True, exist_ok=True)
  fd = os.open(folder / name, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
      raise FolderLocked(
        f"{folder} is being written by another {what} process (PID {holder}); wait for it or use another folder"
      ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    yield folder
  finally:
    os.close(fd)  # releases the lock
