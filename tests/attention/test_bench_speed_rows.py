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
