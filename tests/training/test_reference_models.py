"""The embedded reference models are real trained models: they load, fit the size budget, and do their job."""

import json

import jax.numpy as jnp
import pytest

from jaxeff.models.embedded import load_reference_model, reference_model_path
from jaxeff.training import data as data_lib
from jaxeff.training.trainer import evaluate


@pytest.mark.parametrize("name", ["tiny-code", "tiny-recall", "tiny-moe"])
def test_assets_are_small_hf_folders_with_a_recorded_command(name):
  path = reference_model_path(name)
  files = {p.name for p in path.iterdir()}
  assert {"config.json", "model.safetensors", "tokenizer.json", "TRAINING.json"} <= files
  assert sum(p.stat().st_size for p in path.iterdir()) <= 10 * 2**20
  record = json.loads((path / "TRAINING.json").read_text())
  assert record["command"] == f"python benchmarks/train_reference_models.py {name}"
  config, params, tok = load_reference_model(name, jnp.bfloat16)
  assert params["embed"].dtype == jnp.bfloat16 and tok.encode("ab", add_bos=False) == [97, 98]


@pytest.mark.parametrize("name", ["tiny-code", "tiny-moe"])
def test_code_models_model_held_out_code(name):
  config, params, tok = load_reference_model(name)
  if name == "tiny-moe":
    assert config.n_experts == 8 and config.d_shared > 0
  assert config.max_position_embeddings >= 2048
  batches = data_lib.eval_batches(
    tok, "python", "validation", seq_len=512, batch_size=4, n_batches=2, max_documents=40
  )
  ev = evaluate(
    params,
    batches,
    config=config,
    byte_lengths=data_lib.token_byte_lengths(tok, config.vocab_size),
  )
  # a uniform byte model scores 8 bits/byte; an untrained one more; unigram byte statistics ~ 4.5
  assert ev["bits_per_byte"] < 3.0, ev


def test_needle_probe_is_at_chance_for_a_random_model():
  """The probe can fail: an untrained model never retrieves a 5-digit key (chance 1e-5)."""
  import jax

  from jaxeff.config import ModelConfig
  from jaxeff.models import init_params
  from jaxeff.training.probes import needle_accuracy

  cfg = ModelConfig.tiny(vocab_size=data_lib.PASSKEY_VOCAB)
  acc = needle_accuracy(init_params(cfg, jax.random.key(0)), cfg, [256], n=8)
  assert acc == {256: 0.0}
  with pytest.raises(ValueError, match="vocab"):
    needle_accuracy(init_params(ModelConfig.tiny(), jax.random.key(0)), ModelConfig.tiny(), [256], n=1)


def test_tiny_recall_retrieves_the_pass_key_across_the_context():
  """The retrieval probe model finds the whole 5-digit key anywhere in up to 4096 tokens of code (chance
  1e-5); TRAINING.json records >= 95 % at 256-4096 tokens over 40 examples each."""
  from jaxeff.training.probes import needle_accuracy

  config, params, _ = load_reference_model("tiny-recall", jnp.float32)
  assert config.max_position_embeddings >= 4096 and config.vocab_size >= data_lib.PASSKEY_VOCAB
  acc, digits = needle_accuracy(params, config, [512, 2048], n=16, return_per_digit=True)
  for L in acc:
    assert acc[L] >= 0.85, (L, acc[L], digits[L])
