"""Named training configs (``jaxeff train --config preset:NAME``), including the reference models."""

from __future__ import annotations

import json
from pathlib import Path

from jaxeff.config import ModelConfig
from jaxeff.training.config import TrainConfig


def smoke() -> TrainConfig:
  """A seconds-long run on a slice of the stdlib corpus (tests, demos)."""
  return TrainConfig(
    model=ModelConfig.tiny(),
    max_documents=40,
    seq_len=64,
    batch_size=8,
    steps=30,
    lr=3e-3,
    warmup_steps=5,
    eval_every=15,
    eval_batches=2,
    checkpoint_every=10,
    log_every=5,
  )


def tiny_code() -> TrainConfig:
  """``tiny-code``: a byte-level Llama-style LM on the stdlib code corpus with a 2048-token context."""
  model = ModelConfig.tiny(
    d_model=128,
    n_layers=4,
    n_heads=4,
    n_kv_heads=2,
    head_dim=32,
    d_ff=384,
    max_position_embeddings=4096,
    rope_theta=10000.0,
  )
  return TrainConfig(
    model=model,
    corpora=("python",),
    weights=(1.0,),
    seq_len=512,
    batch_size=16,
    steps=400,
    lr=3e-3,
    warmup_steps=40,
    schedule="cosine",
    eval_every=200,
    eval_batches=8,
    checkpoint_every=200,
    log_every=25,
  )


def tiny_recall() -> TrainConfig:
  """``tiny-recall``, first stage: short rows of code and pass-key retrieval (vocab 320 holds the key symbols);
  later stages of ``benchmarks/train_reference_models.py`` lengthen the context to 4096."""
  model = ModelConfig.tiny(
    vocab_size=320,
    d_model=128,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    head_dim=32,
    d_ff=384,
    max_position_embeddings=8192,
    rope_theta=100000.0,
  )
  return TrainConfig(
    model=model,
    corpora=("python", "passkey"),
    weights=(0.3, 0.7),
    passkey_rows=16384,
    seq_len=256,
    batch_size=32,
    steps=1000,
    lr=2e-3,
    warmup_steps=30,
    schedule="cosine",
    eval_every=250,
    eval_batches=2,
    checkpoint_every=250,
    log_every=25,
  )


def tiny_moe() -> TrainConfig:
  """``tiny-moe``: a byte-level Qwen2-MoE-style LM (8 routed experts, top-2, a gated shared expert) on the stdlib
  code corpus: the quality probe for CAMERA pruning and quantization."""
  model = ModelConfig.tiny(
    model_type="qwen2_moe",
    qkv_bias=True,
    d_model=128,
    n_layers=4,
    n_heads=4,
    n_kv_heads=2,
    head_dim=32,
    d_ff=384,
    n_experts=8,
    experts_per_token=2,
    d_expert=96,
    d_shared=96,
    shared_gate=True,
    max_position_embeddings=2048,
    rope_theta=10000.0,
  )
  return TrainConfig(
    model=model,
    corpora=("python",),
    weights=(1.0,),
    seq_len=512,
    batch_size=16,
    steps=600,
    lr=3e-3,
    warmup_steps=40,
    schedule="cosine",
    eval_every=300,
    eval_batches=8,
    checkpoint_every=100,
    log_every=25,
  )


def tiny_arith() -> TrainConfig:
  """``tiny-arith``: a byte-level model trained on the ``arith`` digit-sum task, half direct answers and half
  chain of thought (``jaxeff.tasks.arith``): the reference model of SeerSC and self-consistency."""
  model = ModelConfig.tiny(
    d_model=96,
    n_layers=3,
    n_heads=4,
    n_kv_heads=4,
    head_dim=24,
    d_ff=256,
    max_position_embeddings=256,
    rope_theta=10000.0,
  )
  return TrainConfig(
    model=model,
    corpora=("arith",),
    weights=(1.0,),
    passkey_rows=65536,
    seq_len=128,
    batch_size=32,
    steps=3000,
    lr=3e-3,
    warmup_steps=50,
    schedule="cosine",
    eval_every=500,
    eval_batches=4,
    checkpoint_every=250,
    log_every=50,
  )


PRESETS = {
  "smoke": smoke,
  "tiny-code": tiny_code,
  "tiny-recall": tiny_recall,
  "tiny-moe": tiny_moe,
  "tiny-arith": tiny_arith,
}


def load_train_config(path_or_preset: str, overrides: list[str] | None = None) -> TrainConfig:
  """A TrainConfig from a YAML/JSON file or ``preset:NAME`` (see ``jaxeff.training.presets``), then overrides."""
  if path_or_preset.startswith("preset:"):
    name = path_or_preset.split(":", 1)[1]
    if name not in PRESETS:
      raise ValueError(f"unknown training preset {name!r}; choose one of {sorted(PRESETS)}")
    cfg = PRESETS[name]()
  else:
    from jaxeff.io import read_text

    path = Path(path_or_preset)
    text = read_text(path, "training config file")
    if path.suffix in (".yaml", ".yml"):
      import yaml

      try:
        raw = yaml.safe_load(text)
      except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ValueError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    else:
      try:
        raw = json.loads(text)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
      raise ValueError(f"{path}: a training config is a mapping of fields, got {type(raw).__name__}")
    if not isinstance(raw.get("model", {}), dict | type(None)):
      raise ValueError(f"{path}: model: expected a mapping of model fields, got {raw['model']!r}")
    base = TrainConfig().to_dict()
    model = dict(base["model"])
    model.update(raw.pop("model", {}) or {})
    base.update(raw)
    base["model"] = model
    cfg = TrainConfig.from_dict(base)
  return cfg.override(overrides or [])
