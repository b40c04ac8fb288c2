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
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any


class MissingDependency(ImportError):
  """An optional package a feature needs is not installed (the CLI prints the one line and exits 2)."""


def require(module: str, purpose: str, extra: str):
  """Import and return ``module``, or raise ``MissingDependency`` naming the feature and the extra to install.

  Example:
    >>> require("json", "reading JSON", "none").dumps([1])
    '[1]'
  """
  import importlib

  try:
    return importlib.import_module(module)
  except ImportError:
    top = module.split(".")[0]
    raise MissingDependency(f"{purpose} needs {top}: pip install 'jaxeff[{extra}]' (or pip install {top})") from None


def read_text(path: str | os.PathLike, what: str = "file") -> str:
  """The UTF-8 text of ``path``; a missing file or bytes that are not UTF-8 raise one error naming the file."""
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{what} not found: {path}" if not path.exists() else f"{path} is not a file")
  try:
    return path.read_text(encoding="utf-8")
  except UnicodeDecodeError as e:
    line = path.read_bytes()[: e.start].count(b"\n") + 1
    raise ValueError(f"{path}:{line}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start})") from None


# A record schema: key -> spec, where a spec is a type, a tuple of types, a one-element list ``[spec]`` (a list
# whose items match spec) or a dict (a nested record). A key ending in "?" is optional. ``int`` never accepts a
# bool; ``float`` accepts ints.
Schema = Mapping[str, Any]


def _spec_name(spec) -> str:
  if isinstance(spec, list):
    return f"a list of {_spec_name(spec[0])}"
  if isinstance(spec, Mapping):
    return "an object"
  if isinstance(spec, tuple):
    return " or ".join(_spec_name(t) for t in spec)
  return {str: "a string", int: "an integer", float: "a number", bool: "true/false", dict: "an object"}.get(
    spec, spec.__name__
  )


def _matches(value, spec) -> bool:
  if isinstance(spec, tuple):
    return any(_matches(value, t) for t in spec)
  if spec is int:
    return isinstance(value, int) and not isinstance(value, bool)
  if spec is float:
    return isinstance(value, int | float) and not isinstance(value, bool)
  if isinstance(spec, type):
    return isinstance(value, spec)
  return True


def record_problems(obj: Any, schema: Schema, where: str = "") -> list[str]:
  """What is wrong with ``obj`` against ``schema`` (see ``Schema``): every problem, with its key path.

  Example:
    >>> schema = {"id": str, "tests": [{"input": str, "output": str}], "lang?": str}
    >>> for p in record_problems({"id": 1, "tests": [{"input": 3}]}, schema):
    ...   print(p)
    id: expected a string, got 1
    tests[0].input: expected a string, got 3
    tests[0]: missing 'output'
  """
  if not isinstance(obj, dict):
    return [f"{where or 'record'}: expected a JSON object, got {type(obj).__name__}"]
  out = []
  for key, spec in schema.items():
    optional = key.endswith("?")
    key = key.rstrip("?")
    path = f"{where}.{key}" if where else key
    if key not in obj:
      if not optional:
        out.append(f"{where or 'record'}: missing {key!r}")
      continue
    out += _value_problems(obj[key], spec, path)
  return out


def _value_problems(value, spec, path: str) -> list[str]:
  if isinstance(spec, Mapping):
    return record_problems(value, spec, path)
  if isinstance(spec, list):
    if not isinstance(value, list):
      return [f"{path}: expected {_spec_name(spec)}, got {json.dumps(value)[:60]}"]
    return [p for i, v in enumerate(value) for p in _value_problems(v, spec[0], f"{path}[{i}]")]
  if not _matches(value, spec):
    return [f"{path}: expected {_spec_name(spec)}, got {json.dumps(value)[:60]}"]
  return []


def read_jsonl(
  path: str | os.PathLike,
  required: Sequence[str] | Schema = (),
  *,
  nonempty: bool = False,
  check: Callable[[dict[str, Any]], object] | None = None,
) -> list[dict[str, Any]]:
  """Objects of a JSONL file, each checked before any is used; errors name the file and line.

  ``required``: key names that must be present, or a ``Schema`` (key -> type / [item spec] / nested schema;
  "key?" optional) that every record must match. ``check``: a further test of each record that raises
  ``ValueError`` (its message gets the file and line; its return value is ignored). ``nonempty``: refuse a file
  without records."""
  path = Path(path)
  schema = required if isinstance(required, Mapping) else {k: object for k in required}
  out = []
  for i, line in enumerate(read_text(path, "JSONL file").splitlines(), 1):
    if not line.strip():
      continue
    try:
      obj = json.loads(line)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}:{i}: not valid JSON ({e.msg})") from None
    problems = record_problems(obj, schema)
    if problems:
      more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
      raise ValueError(f"{path}:{i}: {'; '.join(problems[:3])}{more}")
    if check is not None:
      try:
        check(obj)
      except ValueError as e:
        raise ValueError(f"{path}:{i}: {e}") from None
    out.append(obj)
  if nonempty and not out:
    raise ValueError(f"{path}: no records")
  return out


def check_output_file(path: str | os.PathLike, what: str = "output file") -> Path:
  """Refuse, before any work, an output file path that is a folder or whose folder cannot be created or
  written (the file itself is replaced atomically at the end)."""
  path = Path(path)
  if path.is_dir():
    raise IsADirectoryError(f"{what} {path} is a folder; give a file path")
  return _writable_from(path.parent, path, what)


def _writable_from(start: Path, path: Path, what: str) -> Path:
  """``path`` if its nearest existing ancestor from ``start`` up is a writable folder (so it can be created)."""
  probe = start
  while not probe.exists():
    probe = probe.parent
  if not probe.is_dir():
    raise NotADirectoryError(f"{what} {path}: {probe} is not a folder")
  if not os.access(probe, os.W_OK):
    raise PermissionError(f"{what} {path}: {probe} is not writable")
  return path


def check_output_folder(path: str | os.PathLike, what: str = "output folder") -> Path:
  """Refuse, before any work, an output folder path that exists as a file or cannot be created or written."""
  path = Path(path)
  if path.exists() and not path.is_dir():
    raise NotADirectoryError(f"{what} {path} exists and is not a folder")
  return _writable_from(path, path, what)


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

  folder = check_output_folder(path)
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


def locked_file(path: str | os.PathLike, what: str = "jaxeff"):
  """``locked_folder`` for one output file: the lock is ``.<name>.lock`` beside it (writers of other files in the
  same folder do not wait), after ``check_output_file``.

  Example:
    >>> import tempfile, pathlib
    >>> with locked_file(pathlib.Path(tempfile.mkdtemp()) / "out.jsonl") as folder:
    ...   pass
  """
  path = check_output_file(path)
  return locked_folder(path.parent, what, name=f".{path.name}.lock")
