"""GGUF loading: tiny files written here (every tensor type, llama.cpp's permutation) against transformers' GGUF
loader, clear errors for bad files, and the real SmolLM2-135M-Instruct file when it has been fetched."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxeff.config import UnsupportedConfigError
from jaxeff.models import forward, load_hf
from jaxeff.models.gguf import GGUFFile, gguf_to_hf, load_gguf, unpermute_rotary
from jaxeff.models.hf_io import CheckpointError
from tests.gguf_fixtures import permute, write_tiny_gguf

pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
  hf = write_tiny_gguf(path)
  return path, hf


def _logits(config, params, ids):
  ids = jnp.asarray([ids], jnp.int32)
  out, _ = forward(params, ids, jnp.arange(ids.shape[1])[None], config=config)
  return np.asarray(out[0])


def test_unpermute_inverts_llama_cpp_permute():
  w = np.random.default_rng(0).standard_normal((4 * 8, 6))
  np.testing.assert_array_equal(unpermute_rotary(permute(w, 4), 4), w)
  assert not np.array_equal(permute(w, 4), w)


def test_tiny_gguf_config_and_exact_f32_roundtrip(tmp_path):
  path = tmp_path / "f32.gguf"
  hf = write_tiny_gguf(path, types={"attn_q.weight": "F32", "attn_k.weight": "F32"})
  config, params = load_gguf(path)
  assert (config.n_layers, config.d_model, config.n_heads, config.n_kv_heads, config.head_dim) == (2, 256, 4, 2, 64)
  assert config.vocab_size == 260 and not config.tie_embeddings and config.bos_token_id == 256
  for i in range(2):  # the un-permuted q/k equal the HF weights the file was written from, bit for bit
    np.testing.assert_array_equal(np.asarray(params["layers"][i]["attn"]["q"]).reshape(256, 256), hf[f"q{i}"])
    np.testing.assert_array_equal(np.asarray(params["layers"][i]["attn"]["k"]).reshape(128, 256), hf[f"k{i}"])


@pytest.mark.needs_torch
def test_tiny_gguf_logits_match_transformers(tiny):
  import torch
  from transformers import AutoModelForCausalLM

  path, _ = tiny
  ref = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
  config, params = load_gguf(path)
  ids = list(np.random.default_rng(1).integers(0, 260, 40))
  with torch.no_grad():
    want = ref(torch.tensor([ids])).logits[0].numpy()
  np.testing.assert_allclose(_logits(config, params, ids), want, atol=1e-4, rtol=1e-4)


@pytest.mark.needs_torch
def test_gguf_to_hf_folder_loads_in_transformers_and_jaxeff(tiny, tmp_path):
  import torch
  from transformers import AutoModelForCausalLM

  path, _ = tiny
  out = gguf_to_hf(path, tmp_path / "hf")
  cfg, params = load_hf(out)
  cfg2, params2 = load_gguf(path)
  assert cfg == cfg2
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), params, params2)
  ref = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
  ids = [256, 5, 17, 99, 3]
  with torch.no_grad():
    want = ref(torch.tensor([ids])).logits[0].numpy()
  np.testing.assert_allclose(_logits(cfg, params, ids), want, atol=1e-4, rtol=1e-4)
  tok_cfg = json.loads((out / "tokenizer_config.json").read_text())
  assert tok_cfg["bos_token"] == "<|bos|>" and "chat_template" in tok_cfg


def test_truncated_and_corrupt_files_raise_one_clear_error(tiny, tmp_path):
  path, _ = tiny
  data = path.read_bytes()
  (tmp_path / "cut.gguf").write_bytes(data[: len(data) * 2 // 3])
  with pytest.raises(CheckpointError, match="truncated|corrupt"):
    load_gguf(tmp_path / "cut.gguf")
  (tmp_path / "junk.gguf").write_bytes(b"GGUF" + bytes(range(256)) * 4)
  with pytest.raises(CheckpointError, match="corrupt"):
    load_gguf(tmp_path / "junk.gguf")
  (tmp_path / "head.gguf").write_bytes(data[:100])
  with pytest.raises(CheckpointError):
    load_gguf(tmp_path / "head.gguf")
  with pytest.raises(CheckpointError, match="not found"):
    load_gguf(tmp_path / "absent.gguf")
  # a failed conversion leaves no folder behind
  with pytest.raises(CheckpointError):
    gguf_to_hf(tmp_path / "cut.gguf", tmp_path / "out")
  assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_unsupported_type_architecture_and_missing_tensors(tmp_path):
  write_tiny_gguf(tmp_path / "i8.gguf", types={"attn_norm.weight": "I8"})
  with pytest.raises(CheckpointError, match=r"unsupported types: .*blk\.0\.attn_norm\.weight \(I8\)"):
    load_gguf(tmp_path / "i8.gguf")
  write_tiny_gguf(tmp_path / "gap.gguf", skip=("blk.1.ffn_up.weight", "blk.0.attn_v.weight"))
  with pytest.raises(
    CheckpointError, match="2 missing: model.layers.0.self_attn.v_proj.weight, model.layers.1.mlp.up"
  ):
    load_gguf(tmp_path / "gap.gguf")
  write_tiny_gguf(tmp_path / "arch.gguf", arch="phi3")
  with pytest.raises(UnsupportedConfigError, match="unsupported GGUF architecture 'phi3'"):
    load_gguf(tmp_path / "arch.gguf")
  assert GGUFFile(tmp_path / "gap.gguf").architecture == "llama"


# ------------------------------------------------------------------------------- the real model (fetched)
REAL = "smollm2-135m-instruct"
PROMPTS = ["What is the capital of France?", "Name three primary colors.", "What is 12 plus 30?"]


@pytest.fixture(scope="module")
def real():
  from jaxeff.models.registry import gguf_path, is_fetched, model_dir

  if not is_fetched(REAL):
    pytest.skip(f"{REAL} is not fetched: run `jaxeff models fetch {REAL}` (.ci/run does)")
  from jaxeff.models.registry import load_real_model

  config, params, tok = load_real_model(REAL)
  return config, params, tok, gguf_path(REAL), model_dir(REAL)


@pytest.fixture(scope="module")
def oracle(real):
  torch = pytest.importorskip("torch")
  from transformers import AutoModelForCausalLM, AutoTokenizer

  gg = real[3]
  model = AutoModelForCausalLM.from_pretrained(str(gg.parent), gguf_file=gg.name, dtype=torch.float32)
  tok = AutoTokenizer.from_pretrained(str(gg.parent), gguf_file=gg.name)
  return model, tok


def _text(n_chars=4000):
  import pydoc_data.topics as topics

  return topics.topics["assignment"][:n_chars]


@pytest.mark.needs_torch
def test_real_tokenizer_and_chat_template_match_transformers(real, oracle):
  _, _, tok, _, _ = real
  _, ref = oracle
  texts = [_text(3000), "  two spaces\tand a tab\n\n", "Ünïcödé 日本語 🎉 1234567", "<|im_start|>user\nhi<|im_end|>"]
  for t in texts:
    assert tok.encode(t) == ref(t)["input_ids"], t[:40]
  for p in PROMPTS:
    msgs = [{"role": "user", "content": p}]
    want = ref.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert tok.render_chat(msgs) == want
    assert tok.apply_chat_template(msgs) == ref(want, add_special_tokens=False)["input_ids"]
  assert tok.decode(tok.encode(texts[0])) == texts[0]


@pytest.mark.needs_torch
def test_real_logits_match_transformers_gguf_loader(real, oracle):
  import torch

  config, params, tok, _, _ = real
  model, _ = oracle
  ids = tok.encode(_text())[:320]
  assert len(ids) == 320
  with torch.no_grad():
    want = model(torch.tensor([ids])).logits[0].numpy()
  got = _logits(config, params, ids)
  # float32 through 30 layers: the two implementations round differently (1.5e-4 measured on logits up to
  # ~40); in float64 they agree to 2e-5 (test below), so the bound here is float32 rounding, not a mismatch.
  np.testing.assert_allclose(got, want, atol=3e-4, rtol=0)
  assert (got.argmax(-1) == want.argmax(-1)).mean() > 0.99


@pytest.mark.needs_torch
def test_real_logits_float64_match_and_saved_folder_is_the_gguf_model(real, oracle):
  import torch
  from transformers import AutoModelForCausalLM

  config, params, tok, _, folder = real
  model, _ = oracle
  ids = tok.encode(_text(1500))[:128]
  ref = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
  with torch.no_grad():  # jaxeff's save_hf folder, loaded by transformers, is the GGUF model exactly
    np.testing.assert_array_equal(ref(torch.tensor([ids])).logits.numpy(), model(torch.tensor([ids])).logits.numpy())
    ref = ref.double()
    want = ref(torch.tensor([ids])).logits[0].numpy()
  with jax.enable_x64(True):
    p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
    got = _logits(config, p64, ids)
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


@pytest.mark.needs_torch
def test_real_greedy_chat_answers_match_transformers(real, oracle):
  import torch

  from jaxeff.generation import Sampler, SamplingParams

  config, params, tok, _, _ = real
  model, _ = oracle
  prompts = [tok.apply_chat_template([{"role": "user", "content": p}]) for p in PROMPTS]
  sp = SamplingParams(max_new_tokens=16, temperature=0.0, stop_tokens=config.stop_token_ids, pad_id=0)
  out = Sampler(config, params).generate(prompts, sp, jax.random.key(0)).sequences()
  for ids, row in zip(prompts, out):
    with torch.no_grad():
      ref = model.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False)[0, len(ids) :].tolist()
    assert row[0] == ref[: len(row[0])] and len(row[0]) == len(ref)
  assert tok.decode(out[0][0]) == "The capital of France is Paris."


def test_rope_scaling_metadata_linear_read_others_refused():
  from jaxeff.config import RopeScaling
  from jaxeff.models.gguf import gguf_config

  meta = {
    "general.architecture": "llama",
    "llama.block_count": 2,
    "llama.embedding_length": 64,
    "llama.feed_forward_length": 96,
    "llama.attention.head_count": 4,
    "llama.vocab_size": 32,
  }
  assert gguf_config(meta).rope_scaling is None
  lin = {**meta, "llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": 8.0}
  assert gguf_config(lin).rope_scaling == RopeScaling(8.0, rope_type="linear")
  with pytest.raises(UnsupportedConfigError, match=r"rope.scaling.factor=-2.0 \(must be positive\)"):
    gguf_config({**lin, "llama.rope.scaling.factor": -2.0})
  with pytest.raises(UnsupportedConfigError, match="rope.scaling.type='yarn'"):
    gguf_config({**meta, "llama.rope.scaling.type": "yarn", "llama.rope.scaling.factor": 4.0})
  with pytest.raises(UnsupportedConfigError, match="rope_freqs.weight .*not read"):
    gguf_config(meta, {"token_embd.weight", "rope_freqs.weight"})
