"""Resumable checkpoints: an orbax ``CheckpointManager`` for (params, optimiser state, data-iterator state,
config), atomic commits, restore into an abstract target."""

from __future__ import annotations

import gc
import shutil
import sys
from pathlib import Path

import jax

from jaxeff.training.config import TrainConfig


def _quiet_orbax_leftovers() -> None:
  """After a failed restore, orbax leaves read coroutines that raise the same error again when they are
  garbage-collected ("Exception ignored in ... Traceback", dozens of lines after the real message): drop those
  (and only those) from ``sys.unraisablehook``."""
  previous = sys.unraisablehook
  if getattr(previous, "_jaxeff_quiet", False):
    return

  def hook(unraisable):
    code = getattr(unraisable.object, "cr_code", None)
    if code is not None and "orbax" in code.co_filename:
      return
    previous(unraisable)

  hook._jaxeff_quiet = True
  sys.unraisablehook = hook


class CheckpointDamaged(ValueError):
  """No checkpoint of a run restores (each one is named with why)."""


class Checkpointer:
  """Orbax ``CheckpointManager`` for (params, opt_state, data state, config); atomic commits, restore into
  an abstract target, stale ``*.orbax-checkpoint-tmp`` directories of killed saves removed on open."""

  def __init__(self, directory: Path, keep: int = 2):
    import orbax.checkpoint as ocp

    self._ocp = ocp
    directory = Path(directory).absolute()
    self.directory = directory
    directory.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
      for stale in directory.glob("*.orbax-checkpoint-tmp*"):
        shutil.rmtree(stale, ignore_errors=True)
    self.manager = ocp.CheckpointManager(
      directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    )

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, params, opt_state, data_state: dict, config: TrainConfig) -> None:
    ocp = self._ocp
    self.manager.save(
      step,
      args=ocp.args.Composite(
        params=ocp.args.StandardSave(params),
        opt_state=ocp.args.StandardSave(opt_state),
        data=ocp.args.JsonSave(data_state),
        config=ocp.args.JsonSave(config.to_dict()),
      ),
    )

  def restore(self, step: int, abstract_params, abstract_opt_state):
    ocp = self._ocp
    out = self.manager.restore(
      step,
      args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_params),
        opt_state=ocp.args.StandardRestore(abstract_opt_state),
        data=ocp.args.JsonRestore(),
        config=ocp.args.JsonRestore(),
      ),
    )
    return out["params"], out["opt_state"], out["data"], out["config"]

  def restore_latest_intact(self, abstract_params, abstract_opt_state, log=None):
    """Restore the newest checkpoint that reads back whole: ``(step, params, opt_state, data, config)``, or
    ``None`` when there is none. A checkpoint that fails to restore (a truncated file, a full disk during its
    write, a missing item) is reported by step and moved aside to ``<checkpoints>/../damaged_checkpoints/``
    (never deleted), and the previous one is tried; ``CheckpointDamaged`` names every damaged step when none
    is intact. ``log``: where the report goes (default: standard error)."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    damaged = []
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        return (step, *self.restore(step, abstract_params, abstract_opt_state))
      except Exception as e:  # orbax / tensorstore raise many types for a damaged file
        _quiet_orbax_leftovers()
        gc.collect()  # the failed restore's pending reads are finalised now, quietly
        why = (str(e).strip().splitlines() or [type(e).__name__])[0].split(" See full TensorStore")[0][:200]
        damaged.append(f"step {step} ({type(e).__name__}: {why})")
        log(f"jaxeff: checkpoint step {step} in {self.directory} is damaged ({why}); trying the previous one")
    if damaged:
      raise CheckpointDamaged(
        f"no intact checkpoint in {self.directory}: {'; '.join(damaged)}. Move the checkpoints folder away to start "
        "the run over"
      )
    return None

  def set_aside(self, step: int) -> Path:
    """Move checkpoint ``step`` out of the manager's folder (to ``damaged_checkpoints/<step>`` beside it), so a
    resumed run can save that step again; returns where it went."""
    src = self.directory / str(step)
    dst = self.directory.parent / "damaged_checkpoints" / str(step)
    if jax.process_index() == 0 and src.exists():
      dst.parent.mkdir(parents=True, exist_ok=True)
      n = 1
      while dst.exists():
        dst, n = dst.with_name(f"{step}.{n}"), n + 1
      shutil.move(str(src), str(dst))
    self.manager.reload()
    return dst

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
