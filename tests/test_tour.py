"""`jaxeff tour --quick` runs every stop, prints one table, writes the HTML report; its numbers agree with
independent recomputations (the benchmarks' logic or a closed form)."""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxeff import cli
from jaxeff.tour import STOPS


@pytest.fixture(scope="module")
def tour(tmp_path_factory):
  out = tmp_path_factory.mktemp("tour")
  import contextlib
  import io

  buf = io.StringIO()
  with contextlib.redirect_stdout(buf):
    assert cli.main(["tour", "--quick", "--out", str(out)]) == 0
  rows = {r["key"]: r for r in json.loads((out / "tour.json").read_text())["rows"]}
  return out, buf.getvalue(), rows


def test_every_stop_in_the_table_and_the_report(tour):
  out, printed, rows = tour
  assert list(rows) == list(STOPS) and len(rows) == 10
  for r in rows.values():
    assert r["method"] in printed and r["saves"] in printed and r["seconds"] > 0
  page = (out / "report.html").read_text()
  assert page.count("<tr><td><b>") == 10
  assert page.count("data:image/png;base64,") == 10  # every stop has its figure
  for r in rows.values():  # ... with a caption that says what to look at, and a verdict in the table
    assert r["figure"] and (out / r["figure"]).is_file() and len(r["caption"]) > 40, r["key"]
    assert r["verdict"] and r["verdict"] in printed, r["key"]
  assert page.count("<figcaption>") == 10 and "who won" in page
  assert "jax_backend" in page


def test_report_renders_in_a_real_browser(tour, tmp_path):
  """Headless Chromium loads report.html: every figure decodes (naturalWidth > 0), none is broken."""
  import shutil
  import subprocess

  browser = shutil.which("chromium") or shutil.which("chromium-browser")
  if browser is None:
    pytest.skip("needs headless Chromium (Debian package chromium; .ci/run installs it as root)")
  out, _, _ = tour
  page = (out / "report.html").read_text()
  probe = (
    "<script>window.addEventListener('load',()=>{const i=[...document.images];document.body.setAttribute("
    "'data-probe',i.length+':'+i.filter(x=>x.complete&&x.naturalWidth>0).length)});</script>"
  )
  (tmp_path / "r.html").write_text(page.replace("</body>", probe + "</body>"))
  cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000"]
  dom = subprocess.run(
    [*cmd, "--dump-dom", f"file://{tmp_path / 'r.html'}"], capture_output=True, text=True, timeout=120
  )
  found = re.search(r'data-probe="(\d+):(\d+)"', dom.stdout)
  assert found, dom.stderr[-2000:]
  assert found.group(1) == found.group(2) == "10", found.group(0)
  shot = tmp_path / "report.png"
  subprocess.run(
    [*cmd, f"--screenshot={shot}", "--window-size=1200,2400", f"file://{out / 'report.html'}"],
    capture_output=True,
    timeout=120,
  )
  assert shot.is_file() and shot.stat().st_size > 20_000  # a rendered page, not a blank one


def test_commonkv_numbers_match_closed_form_and_uncached_forward(tour):
  """Bytes per token from the ranks; the full-cache bits/byte equals the plain (uncached) forward's."""
  from jaxeff.kvcache import compress
  from jaxeff.models import forward
  from jaxeff.models.embedded import load_reference_model
  from jaxeff.tokenizer import ByteTokenizer
  from jaxeff.training import data as data_lib

  m = tour[2]["commonkv"]["metrics"]
  cfg, params, _ = load_reference_model("tiny-code")
  _, _, spec, _ = compress(cfg, params, group_size=2, ratio=0.5, multiple=8)
  assert m["bytes_per_token"]["full"] == cfg.n_layers * 2 * cfg.n_kv_heads * cfg.head_dim * 4
  assert m["bytes_per_token"]["latent"] == sum(spec.rank_of(i) * 4 for i in range(cfg.n_layers))
  stream = np.concatenate(data_lib.tokenize_corpus("python", "validation", ByteTokenizer()))
  rows = np.stack([stream[i * 288 : (i + 1) * 288] for i in range(2)]).astype(np.int32)
  logits, _ = forward(params, jnp.asarray(rows[:, :-1]), jnp.broadcast_to(jnp.arange(287), (2, 287)), config=cfg)
  lp = jax.nn.log_softmax(logits[:, 255:], -1)
  nll = -np.take_along_axis(np.asarray(lp), rows[:, 256:, None], -1).sum()
  assert m["bits_per_byte"]["full"] == pytest.approx(nll / np.log(2) / 64, rel=1e-4)


def test_tcbench_scaling_and_theory_numbers(tour):
  from jaxeff.scaling import laws
  from jaxeff.tcbench import matrix as T
  from jaxeff.theory import experiments as E

  rows = tour[2]
  tc = rows["tcbench"]["metrics"]
  assert tc["same_swaps"] is True and tc["speedup"] > 1
  M = T.synthetic_matrix(100, 50, seed=100, n_bugs=50)
  sel, value = T.wrongselect(M, engine="fast", search_initial=True)
  assert tc["objective"] == pytest.approx(value) and tc["objective"] == pytest.approx(T.jaccard_objective(M, sel))
  sc = rows["scaling"]["metrics"]
  assert abs(sc["alpha"] - laws.EPOCH.alpha) < 0.05  # the fit recovers the law the table was drawn from
  assert sc["true_tokens_per_param"] == pytest.approx(laws.optimal_allocation(laws.EPOCH, 1e21).tokens_per_param)
  assert rows["grads"]["metrics"] == pytest.approx(E.run("E6", small=True)["result"]["k4"])
  assert rows["cot"]["metrics"]["bound_never_violated"] is True


def test_method_stops_report_what_they_measured(tour):
  rows = tour[2]
  p = rows["proxyattn"]["metrics"]
  assert 0 < p["density"] < 1 and p["rel_error"] < 0.5
  assert f"{p['density']:.0%}" in rows["proxyattn"]["saves"]
  s = rows["seersc"]["metrics"]
  assert s["seersc"]["tokens_per_query"] < s["sc"]["tokens_per_query"]
  c = rows["camera"]["metrics"]
  assert 0.7 < c["moe_bytes_kept"] < 0.8  # 25 % of the micro-experts pruned and compacted
  assert set(rows["judgeq"]["metrics"]["accuracy"]) == {"full", "judgeq", "snapkv"}
  loss = rows["codetrans"]["metrics"]["loss"]
  assert set(loss) == {"PA only", "SA->PA"} and all(np.isfinite(v["test_target_loss"]) for v in loss.values())
  assert re.search(r"\d", rows["codetrans"]["quality"])


def test_unknown_stop_fails_clearly(capsys, tmp_path):
  assert cli.main(["tour", "--only", "nope", "--out", str(tmp_path)]) == 2
  assert "unknown tour stops" in capsys.readouterr().err
