"""Property tests (hypothesis) of what jaxeff reads from disk (issue 23):

* safetensors headers: for any mutation of a valid file's header or length, ``SafetensorsFile`` accepts exactly
  the files the safetensors library itself accepts, returns the same arrays, and refuses the others with
  ``CheckpointError`` (never another exception);
* HF configs: any JSON value in any field gives a ``ModelConfig`` whose typed fields hold their types, or a
  ``ValueError`` naming the field (never another exception);
* training configs: any JSON value in any field gives a ``TrainConfig`` or a ``ValueError``.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxeff.config import ModelConfig
from jaxeff.models.hf_io import CheckpointError, SafetensorsFile, write_safetensors
from jaxeff.training import TrainConfig
from tests.bad_inputs import TINY_CONFIG

safetensors_numpy = pytest.importorskip("safetensors.numpy")

json_values = st.recursive(
  st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=8),
  lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
  max_leaves=6,
)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _valid_file(path, seed: int) -> None:
  rng = np.random.default_rng(seed)
  tensors = {
    "a": rng.normal(size=(3, 4)).astype(np.float32),
    "b": rng.integers(-5, 5, size=(5,)).astype(np.int32),
    "c": rng.normal(size=(2, 2, 2)).astype(np.float16),
  }
  write_safetensors(path, tensors)


def _split(raw: bytes):
  (n,) = struct.unpack("<Q", raw[:8])
  return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _join(header, data: bytes) -> bytes:
  h = json.dumps(header).encode()
  return struct.pack("<Q", len(h)) + h + data


mutations = st.one_of(
  st.tuples(st.just("offset"), st.sampled_from("abc"), st.integers(0, 1), st.integers(-80, 80)),
  st.tuples(st.just("dtype"), st.sampled_from("abc"), st.sampled_from(["F32", "F16", "I32", "I8", "U8", "F64", "X9"])),
  st.tuples(st.just("shape"), st.sampled_from("abc"), st.lists(st.integers(-1, 6), max_size=3)),
  st.tuples(
    st.just("field"), st.sampled_from("abc"), st.sampled_from(["dtype", "shape", "data_offsets"]), json_values
  ),
  st.tuples(st.just("entry"), st.sampled_from("abc"), json_values),
  st.tuples(st.just("truncate"), st.integers(1, 120)),
  st.tuples(st.just("append"), st.binary(min_size=1, max_size=16)),
)


def _mutate(raw: bytes, m) -> bytes:
  header, data = _split(raw)
  kind = m[0]
  if kind == "offset":
    header[m[1]]["data_offsets"][m[2]] += m[3]
  elif kind == "dtype":
    header[m[1]]["dtype"] = m[2]
  elif kind == "shape":
    header[m[1]]["shape"] = m[2]
  elif kind == "field":
    header[m[1]][m[2]] = m[3]
  elif kind == "entry":
    header[m[1]] = m[2]
  elif kind == "truncate":
    return raw[: max(0, len(raw) - m[1])]
  elif kind == "append":
    return raw + m[1]
  return _join(header, data)


@SETTINGS
@given(seed=st.integers(0, 3), mutation=mutations)
def test_safetensors_header_agrees_with_the_library(tmp_path_factory, seed, mutation):
  d = tmp_path_factory.mktemp("st")
  good = d / "good.safetensors"
  _valid_file(good, seed)
  bad = d / "m.safetensors"
  bad.write_bytes(_mutate(good.read_bytes(), mutation))
  try:
    want = safetensors_numpy.load_file(str(bad))
  except Exception:
    want = None
  try:
    f = SafetensorsFile(bad)
    got = {k: np.array(f.get(k)) for k in f.keys()}
  except CheckpointError:
    got = None
  if want is None:
    assert got is None, f"jaxeff accepted a file the safetensors library refuses ({mutation})"
  else:
    assert got is not None, f"jaxeff refused a file the safetensors library reads ({mutation})"
    assert set(got) == set(want)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k])


HF_FIELDS = sorted(TINY_CONFIG) + ["rope_theta", "attention_bias", "sliding_window", "head_dim", "rope_scaling"]


@SETTINGS
@given(field=st.sampled_from(HF_FIELDS), value=json_values)
def test_hf_config_any_field_value_is_typed_or_refused(field, value):
  hf = {**TINY_CONFIG, field: value}
  try:
    c = ModelConfig.from_hf_config(hf)
  except ValueError as e:
    assert str(e)  # a message; the field named when it is the culprit
    return
  assert isinstance(c.tie_embeddings, bool) and isinstance(c.qkv_bias, bool)
  for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff"):
    v = getattr(c, name)
    assert isinstance(v, int) and not isinstance(v, bool) and v > 0, (name, v)
  assert isinstance(c.rope_theta, float | int) and np.isfinite(c.rope_theta) and c.rope_theta > 0


TRAIN_FIELDS = ["steps", "lr", "seq_len", "batch_size", "seed", "corpora", "weights", "distributed", "schedule"]


@SETTINGS
@given(field=st.sampled_from(TRAIN_FIELDS), value=json_values)
def test_train_config_any_field_value_is_typed_or_refused(field, value):
  d = TrainConfig().to_dict()
  d[field] = value
  try:
    cfg = TrainConfig.from_dict(d)
  except ValueError as e:
    assert field in str(e) or "corpora" in str(e) or "weights" in str(e), str(e)
    return
  assert isinstance(cfg.steps, int) and cfg.steps >= 1 and np.isfinite(cfg.lr) and cfg.lr > 0
  assert isinstance(cfg.distributed, bool) and isinstance(cfg.corpora, tuple)
