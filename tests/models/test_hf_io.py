"""Checkpoint I/O without torch: strict checks, clear errors, atomic writes."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from jaxeff import sharding as shard_lib
from jaxeff.config import ModelConfig, UnsupportedConfigError
from jaxeff.models import CheckpointError, forward, init_params, load_hf, save_hf


@pytest.fixture
def saved(tmp_path):
  cfg = ModelConfig.tiny(qkv_bias=True, model_type="qwen2")
  params = init_params(cfg, jax.random.key(0))
  save_hf(tmp_path / "m", cfg, params)
  return tmp_path / "m", cfg, params


def test_missing_folder_and_files(tmp_path):
  with pytest.raises(CheckpointError, match="not found"):
    load_hf(tmp_path / "nope")
  (tmp_path / "empty").mkdir()
  with pytest.raises(CheckpointError, match="no config.json"):
    load_hf(tmp_path / "empty")


def test_all_key_problems_reported_at_once(saved):
  folder, cfg, _ = saved
  tensors = load_file(str(folder / "model.safetensors"))
  del tensors["model.layers.0.self_attn.q_proj.weight"]
  del tensors["model.layers.1.mlp.up_proj.weight"]
  tensors["model.layers.0.mlp.gate_proj.weight"] = np.zeros((3, 3), np.float32)
  tensors["model.extra.weight"] = np.zeros((2,), np.float32)
  save_file(tensors, str(folder / "model.safetensors"))
  with pytest.raises(CheckpointError) as e:
    load_hf(folder)
  msg = str(e.value)
  assert "2 missing" in msg and "q_proj.weight" in msg and "up_proj.weight" in msg
  assert "1 unexpected: model.extra.weight" in msg
  assert "1 mis-shaped" in msg and "gate_proj" in msg and "(3, 3)" in msg


def test_corrupt_files(saved):
  folder, _, _ = saved
  (folder / "model.safetensors").write_bytes(b"\x00garbage")
  with pytest.raises(CheckpointError, match="corrupt safetensors"):
    load_hf(folder)
  (folder / "config.json").write_text("{not json")
  with pytest.raises(CheckpointError, match="corrupt config.json"):
    load_hf(folder)


def test_unsupported_architecture_field_is_named(saved):
  folder, _, _ = saved
  hf = json.loads((folder / "config.json").read_text())
  hf["rope_parameters"] = {"rope_type": "longrope", "rope_theta": 1e4}
  (folder / "config.json").write_text(json.dumps(hf))
  with pytest.raises(UnsupportedConfigError, match="longrope"):
    load_hf(folder)


def test_index_pointing_to_missing_shard(saved, tmp_path):
  folder, cfg, params = saved
  out = save_hf(tmp_path / "sh", cfg, params, max_shard_bytes=30_000)
  victim = sorted(out.glob("model-*.safetensors"))[1]
  victim.unlink()
  with pytest.raises(CheckpointError, match=victim.name):
    load_hf(out)


def test_resave_switches_layout_and_leaves_no_temp_files(saved, tmp_path):
  folder, cfg, params = saved
  save_hf(folder, cfg, params, max_shard_bytes=30_000)
  save_hf(folder, cfg, params)  # back to one file: the stale index must go
  assert not (folder / "model.safetensors.index.json").exists()
  assert not list(folder.glob(".*.tmp"))
  _, p2 = load_hf(folder)
  np.testing.assert_array_equal(np.asarray(p2["embed"]), np.asarray(params["embed"]))


def test_load_into_sharded_arrays(saved):
  folder, cfg, params = saved
  mesh = shard_lib.make_mesh(data=2, fsdp=2, tensor=2)
  _, sharded = load_hf(folder, dtype=jnp.float32, mesh=mesh)
  q = sharded["layers"][0]["attn"]["q"]
  assert q.sharding.spec == jax.sharding.PartitionSpec("tensor", None, "fsdp")
  assert q.addressable_shards[0].data.shape == (2, 16, 32)
  np.testing.assert_array_equal(np.asarray(q), np.asarray(params["layers"][0]["attn"]["q"]))
  toks = jnp.arange(12).reshape(2, 6) % cfg.vocab_size
  pos = jnp.broadcast_to(jnp.arange(6), (2, 6))
  ref, _ = forward(params, toks, pos, config=cfg)
  with jax.set_mesh(mesh):
    got, _ = jax.jit(lambda p, t, q: forward(p, t, q, config=cfg))(sharded, toks, pos)
  np.testing.assert_allclose(np.asarray(got), np.asarray(ref), atol=1e-5, rtol=1e-5)


def test_saved_files_are_64_byte_aligned_and_standard(saved):
  from safetensors import safe_open

  from jaxeff.models.hf_io import SafetensorsFile

  folder, cfg, params = saved
  f = SafetensorsFile(folder / "model.safetensors")
  for name in f.keys():
    dtype, shape, begin, end = f._entries[name]
    if (end - begin) % 64 == 0:
      assert (f._base + begin) % 64 == 0, name
  with safe_open(str(folder / "model.safetensors"), framework="numpy") as g:  # the reference reader agrees
    for name in g.keys():
      np.testing.assert_array_equal(g.get_tensor(name), f.get(name))


def test_truncated_file_is_reported(saved):
  folder, _, _ = saved
  data = (folder / "model.safetensors").read_bytes()
  (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
  with pytest.raises(CheckpointError, match="inconsistent offsets"):
    load_hf(folder)


def test_non_finite_weights_are_refused_by_name_unless_allowed(saved):
  folder, cfg, params = saved
  tensors = load_file(str(folder / "model.safetensors"))
  tensors["model.layers.1.self_attn.k_proj.weight"][0, 0] = np.nan
  tensors["model.norm.weight"][3] = np.inf
  save_file(tensors, str(folder / "model.safetensors"))
  with pytest.raises(CheckpointError, match=r"2 tensor\(s\) hold NaN or infinity") as e:
    load_hf(folder)
  assert "model.layers.1.self_attn.k_proj.weight" in str(e.value) and "model.norm.weight" in str(e.value)
  _, loaded = load_hf(folder, allow_nonfinite=True)
  assert np.isnan(np.asarray(loaded["layers"][1]["attn"]["k"])).any()


def _rewrite_header(path, edit):
  import struct

  raw = path.read_bytes()
  (n,) = struct.unpack("<Q", raw[:8])
  header = json.loads(raw[8 : 8 + n])
  edit(header)
  new = json.dumps(header).encode()
  new += b" " * (-(8 + len(new)) % 8)
  path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n :])


@pytest.mark.parametrize(
  "edit, message",
  [
    (lambda h: h["model.norm.weight"].__setitem__("data_offsets", [0, 256]), "overlaps the previous tensor"),
    (lambda h: h.pop("model.norm.weight"), "leaves a gap|cover"),
    (lambda h: h["model.norm.weight"].__setitem__("shape", [-64]), "negative dimension|inconsistent"),
  ],
  ids=["overlap", "gap", "negative"],
)
def test_safetensors_headers_are_checked_like_the_library(saved, edit, message):
  """The library rejects these files; jaxeff's zero-copy reader must too (an overlap loads two tensors from one
  region: a silently wrong model)."""
  from safetensors import SafetensorError, safe_open

  folder, _, _ = saved
  _rewrite_header(folder / "model.safetensors", edit)
  with pytest.raises(SafetensorError):
    with safe_open(str(folder / "model.safetensors"), "np") as f:
      list(f.keys())
  with pytest.raises(CheckpointError, match=message):
    load_hf(folder)


@pytest.mark.parametrize("dtype", [None, jnp.float32, jnp.bfloat16])
def test_files_written_elsewhere_load_exactly_whatever_their_alignment(saved, dtype):
  """A file the safetensors library wrote (tensors at arbitrary offsets: read into aligned buffers) and one
  save_hf wrote (aligned: used in place) give the same leaves, equal to the saved parameters (converted)."""
  folder, cfg, params = saved
  tensors = load_file(str(folder / "model.safetensors"))
  tensors["model.norm.weight"][:] = 3e38  # finite, but its float32 sum overflows: must still load
  save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
  from jaxeff.models.hf_io import SafetensorsFile

  f = SafetensorsFile(folder / "model.safetensors")
  assert any(f.get(n).ctypes.data % 64 for n in f.keys())  # the library's layout really is unaligned
  _, a = load_hf(folder, dtype=dtype)
  _, pa = load_hf(folder, dtype=jnp.float32)
  b_folder = save_hf(folder.parent / "aligned", cfg, pa)
  _, b = load_hf(b_folder, dtype=dtype)
  want = jax.tree.map(lambda x: np.asarray(x if dtype is None else x.astype(dtype)), params)
  want["final_norm"] = np.full_like(want["final_norm"], 3e38 if dtype is None else np.asarray(3e38, dtype))
  for got in (a, b):
    jax.tree.map(lambda g, w: np.testing.assert_array_equal(np.asarray(g), w), got, want)
    assert {x.dtype for x in jax.tree.leaves(got)} == {np.dtype(dtype or jnp.float32)}


def test_pieces_of_a_split_tensor_are_all_copied_and_checked(saved, monkeypatch):
  """load_hf copies and checks big tensors in pieces over threads: with pieces of 64 bytes every tensor is
  split; a NaN in a tensor's last piece is still refused, and every leaf still equals the file."""
  from jaxeff.models import hf_io

  monkeypatch.setattr(hf_io, "_PIECE", 64)
  folder, cfg, params = saved
  tensors = load_file(str(folder / "model.safetensors"))
  tensors["model.layers.0.mlp.down_proj.weight"][-1, -1] = np.nan
  save_file(tensors, str(folder / "model.safetensors"))  # the library's (unaligned) layout: every leaf copied
  with pytest.raises(CheckpointError, match=r"1 tensor\(s\) hold NaN or infinity: model.layers.0.mlp.down_proj"):
    load_hf(folder)
  _, got = load_hf(folder, allow_nonfinite=True)
  down = np.asarray(got["layers"][0]["mlp"]["down"])
  assert np.isnan(down).sum() == 1
  want = jax.tree.map(np.asarray, params)
  want["layers"][0]["mlp"]["down"] = down  # the one changed entry (its position is the layout's business)
  jax.tree.map(lambda g, w: np.testing.assert_array_equal(np.asarray(g), w), got, want)
