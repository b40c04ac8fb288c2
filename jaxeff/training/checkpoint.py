"""Resumable checkpoints: an orbax ``CheckpointManager`` for (params, optimiser state, data-iterator state,
config), atomic commits, restore into an abstract target."""

from __future__ import annotations

import shutil
from pathlib import Path

import jax

from jaxeff.training.config import TrainConfig


class Checkpointer:
  """Orbax ``CheckpointManager`` for (params, opt_state, data state, config); atomic commits, restore into
  an abstract target, stale ``*.orbax-checkpoint-tmp`` directories of killed saves removed on open."""

  def __init__(self, directory: Path, keep: int = 2):
    import orbax.checkpoint as ocp

    self._ocp = ocp
    directory = Path(directory).absolute()
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

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
