"""``bench_proxyattn.py --part speed --methods proxy`` reruns one method at a length: the peers' rows measured
there before stay (marked as from an earlier run) instead of being dropped with the whole (shape, length)."""

from benchmarks.bench_proxyattn import merge_speed


def _row(method, length, shape="bench", t=1.0):
  return {"method": method, "length": length, "shape": shape, "time_s": t}


def test_a_partial_rerun_replaces_what_it_measured_and_keeps_the_rest():
  kept = [_row(m, 65536) for m in ("dense", "proxy", "xattention", "flexprefill")]
  kept += [_row("dense", 8192), _row("proxy", 65536, shape="llama-3.1-8b")]
  new = [_row("dense", 65536, t=2.0), _row("proxy", 65536, t=3.0)]
  out = merge_speed(kept, new, "bench", [65536])
  at = {(r["shape"], r["length"], r["method"]): r for r in out}
  assert len(out) == 6
  assert at[("bench", 65536, "dense")]["time_s"] == 2.0 and at[("bench", 65536, "proxy")]["time_s"] == 3.0
  assert "earlier_run" not in at[("bench", 65536, "proxy")]
  assert at[("bench", 65536, "xattention")]["earlier_run"] and at[("bench", 65536, "flexprefill")]["earlier_run"]
  assert "earlier_run" not in at[("bench", 8192, "dense")]
  assert "earlier_run" not in at[("llama-3.1-8b", 65536, "proxy")]


def test_peak_rss_growth_counts_what_a_call_allocates_and_not_its_arguments():
  """The speed rows' ``peak_rss_growth_gib``: a call that writes a 256 MiB output grows the process by about that
  much; a scalar call on a resident 256 MiB argument does not (its argument was resident before). Measured in a
  fresh process: in a long-lived one (a test worker) the allocator may hand the output memory it kept from
  earlier work, which the measure does not see (it is a lower bound, as documented)."""
  import json
  import os
  import subprocess
  import sys

  import pytest

  from jaxeff.attention.bench import _reset_peak_rss, _rss_gib

  if _rss_gib() is None or not _reset_peak_rss():
    pytest.skip("needs Linux's /proc/self/status and clear_refs (peak RSS reset)")
  code = (
    "import json, jax, jax.numpy as jnp\n"
    "from jaxeff.attention.bench import _timed_interleaved\n"
    "n = 2**26\n"  # 256 MiB of float32
    "big = jnp.ones((n,), jnp.float32)\n"
    "t = _timed_interleaved({'writes': (lambda x: jnp.full((n,), 2.0, jnp.float32) * x, (jnp.float32(3.0),)),\n"
    "                        'reads': (jnp.max, (big,))}, repeats=2)\n"
    "print(json.dumps({k: v[3] for k, v in t.items()}))\n"
  )
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
  grew = json.loads(out.stdout.strip().splitlines()[-1])
  assert 0.24 <= grew["writes"] <= 0.6, grew
  assert grew["reads"] < 0.05, grew


def test_speed_rows_name_the_commit_that_measured_them():
  """``benchmarks._common.provenance``: today's date and HEAD's short hash (``+dirty`` only for changes outside
  ``benchmarks/results/``), or ``unknown`` outside a git checkout."""
  import datetime
  import subprocess
  from pathlib import Path

  from benchmarks._common import provenance

  got = provenance()
  assert got["measured"] == datetime.datetime.now(datetime.UTC).date().isoformat()
  root = Path(__file__).resolve().parents[2]
  try:
    head = subprocess.run(
      ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
    )
  except (OSError, subprocess.CalledProcessError):
    assert got["commit"] == "unknown"
    return
  assert got["commit"] in (head.stdout.strip(), head.stdout.strip() + "+dirty")
