"""The ``jaxeff`` command. Thin: parses arguments, calls the library, prints. One module per command group
(``jaxeff/cli/*.py``: a ``register`` function that adds its sub-command, the command body beside it).

Bad input (a missing folder, an unsupported architecture, a prompt longer than the model allows) prints one
``jaxeff: error: ...`` line and exits with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from jaxeff.cli import (
  bench,
  camera,
  codetrans,
  evals,
  generate,
  judgeq,
  models,
  scaling,
  seersc,
  tcbench,
  theory,
  tour,
  train,
)
from jaxeff.io import FolderLocked, MissingDependency
from jaxeff.sandbox.isolation import SandboxUnavailable

# Errors that describe bad input or a busy / unusable machine: one line, exit 2 (anything else is a bug: exit 1).
CLEAR_ERRORS = (
  ValueError,
  FileNotFoundError,
  NotADirectoryError,
  IsADirectoryError,
  PermissionError,
  NotImplementedError,
)
CLEAR_ERRORS += (FolderLocked, SandboxUnavailable, MissingDependency)

REGISTER = (
  tour.register,  # tour
  generate.register,  # generate
  judgeq.register,  # judgeq
  camera.register,  # camera
  models.register_inspect,  # inspect
  models.register_models,  # models
  train.register_train,  # train
  train.register_corpora,  # corpora
  evals.register,  # eval
  bench.register,  # bench
  seersc.register,  # seersc
  scaling.register_sweep,  # sweep
  scaling.register_fit,  # fit
  tcbench.register,  # tcbench
  theory.register,  # theory
  codetrans.register,  # codetrans
)


class _Parser(argparse.ArgumentParser):
  """argparse with a one-line error (``jaxeff CMD: error: ...``, exit 2); sub-parsers inherit it."""

  def error(self, message):
    print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
    raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
  """The ``jaxeff`` argument parser with every sub-command registered."""
  parser = _Parser(
    prog="jaxeff",
    description="jaxeff: efficient LLM inference and training research in JAX/Flax.",
  )
  sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
  for register in REGISTER:
    register(sub)
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  """Run ``jaxeff ARGS``; returns the exit status (2: bad input, one ``jaxeff: error:`` line)."""
  try:
    args = build_parser().parse_args(argv)
  except SystemExit as e:  # --help (0) or a bad argument (2, one line already printed)
    return int(e.code or 0)
  try:
    return args.func(args)
  except CLEAR_ERRORS as e:
    print(f"jaxeff: error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("jaxeff: interrupted", file=sys.stderr)
    return 130
  except Exception as e:  # a bug or an unforeseen input: one line, the traceback kept in a file
    print(f"jaxeff: unexpected {type(e).__name__}: {e} (traceback: {_save_traceback()})", file=sys.stderr)
    return 1


def _save_traceback() -> str:
  """Write the current exception's traceback to a file in the temp folder; its path (for a bug report)."""
  import tempfile
  import traceback

  fd, path = tempfile.mkstemp(prefix="jaxeff-traceback-", suffix=".txt")
  with os.fdopen(fd, "w") as fh:
    fh.write(" ".join(["jaxeff", *sys.argv[1:]]) + "\n\n" + traceback.format_exc())
  return path


if __name__ == "__main__":
  sys.exit(main())
