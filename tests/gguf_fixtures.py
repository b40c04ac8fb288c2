"""Tiny GGUF files written here with gguf-py's writer, as llama.cpp's converter would (the GGUF test oracle's input).

Weights come from a random jaxeff model in torch layout; q/k rows are permuted the way llama.cpp's
``LlamaModel.permute`` does; each matrix is stored in a chosen tensor type. K-quant types (which gguf-py can
dequantize but not quantize) are written as random blocks with sane float16 scales.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Per-tensor storage types exercised by the tiny files (every type the real files use, and then some).
TYPES = {
  "token_embd.weight": "Q8_0",
  "attn_q.weight": "Q4_1",
  "attn_k.weight": "Q4_0",
  "attn_v.weight": "Q5_1",
  "attn_output.weight": "F16",
  "ffn_gate.weight": "Q4_K",
  "ffn_up.weight": "Q6_K",
  "ffn_down.weight": "Q5_0",
  "output.weight": "Q8_0",
}


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
  """llama.cpp's ``LlamaModel.permute``: HF rotary halves -> interleaved pairs, per head."""
  return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def byte_vocab() -> list[str]:
  from tokenizers import pre_tokenizers

  alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
  return alphabet + ["<|bos|>", "<|eos|>", "<|pad|>", "<|user|>"]


def _random_k_blocks(rng, rows: int, cols: int, kind: str) -> np.ndarray:
  """Random K-quant blocks (256 values each) whose float16 super-block scales are small and finite."""
  size = {"Q4_K": 144, "Q6_K": 210}[kind]
  blocks = rng.integers(0, 256, size=(rows, cols // 256, size), dtype=np.uint8)
  if kind == "Q4_K":  # d, dmin (f16) first
    scales = np.stack(
      [rng.uniform(0.001, 0.004, (rows, cols // 256)), rng.uniform(0.0, 0.01, (rows, cols // 256))], -1
    )
    blocks[..., :4] = scales.astype(np.float16).view(np.uint8).reshape(rows, cols // 256, 4)
  else:  # Q6_K: d (f16) last
    d = rng.uniform(0.0002, 0.0006, (rows, cols // 256)).astype(np.float16)
    blocks[..., -2:] = d.view(np.uint8).reshape(rows, cols // 256, 2)
  return blocks.reshape(rows, -1)


def write_tiny_gguf(
  path: Path,
  *,
  arch: str = "llama",
  n_layers: int = 2,
  d: int = 256,
  n_heads: int = 4,
  n_kv: int = 2,
  d_ff: int = 512,
  tied: bool = False,
  seed: int = 0,
  types: dict[str, str] | None = None,
  skip: tuple[str, ...] = (),
) -> dict[str, np.ndarray]:
  """Write a tiny Llama-family GGUF file; returns the HF-layout float weights it was made from."""
  import gguf

  types = dict(TYPES, **(types or {}))
  rng = np.random.default_rng(seed)
  vocab = byte_vocab()
  V, H = len(vocab), d // n_heads
  w = gguf.GGUFWriter(str(path), arch)
  w.add_block_count(n_layers)
  w.add_context_length(512)
  w.add_embedding_length(d)
  w.add_feed_forward_length(d_ff)
  w.add_head_count(n_heads)
  w.add_head_count_kv(n_kv)
  w.add_rope_freq_base(10000.0)
  w.add_layer_norm_rms_eps(1e-5)
  w.add_rope_dimension_count(H)
  w.add_vocab_size(V)
  w.add_tokenizer_model("gpt2")
  w.add_string("tokenizer.ggml.pre", "default")
  w.add_token_list(vocab)
  w.add_token_types([1] * 256 + [3, 3, 3, 4])
  w.add_token_merges([])
  w.add_bos_token_id(256)
  w.add_eos_token_id(257)
  w.add_chat_template("{% for m in messages %}<|user|>{{ m['content'] }}\n{% endfor %}")

  hf: dict[str, np.ndarray] = {}

  def put(name: str, value: np.ndarray, kind: str) -> None:
    if name in skip:
      return
    if kind in ("Q4_K", "Q6_K"):
      raw = _random_k_blocks(rng, *value.shape, kind)
      w.add_tensor(name, raw, raw_dtype=getattr(gguf.GGMLQuantizationType, kind))
    elif kind == "F32":
      w.add_tensor(name, value.astype(np.float32))
    elif kind == "F16":
      w.add_tensor(name, value.astype(np.float16))
    elif kind == "I8":
      w.add_tensor(name, value.astype(np.int8))
    else:
      qt = getattr(gguf.GGMLQuantizationType, kind)
      w.add_tensor(name, gguf.quants.quantize(value.astype(np.float32), qt), raw_dtype=qt)

  mat = lambda *shape: (rng.standard_normal(shape) * 0.05).astype(np.float32)
  norm = lambda: (1.0 + 0.1 * rng.standard_normal(d)).astype(np.float32)
  put("token_embd.weight", mat(V, d), types["token_embd.weight"])
  for i in range(n_layers):
    p = f"blk.{i}."
    q, k = mat(n_heads * H, d), mat(n_kv * H, d)
    permuted = arch == "llama"
    put(p + "attn_q.weight", permute(q, n_heads) if permuted else q, types["attn_q.weight"])
    put(p + "attn_k.weight", permute(k, n_kv) if permuted else k, types["attn_k.weight"])
    put(p + "attn_v.weight", mat(n_kv * H, d), types["attn_v.weight"])
    put(p + "attn_output.weight", mat(d, n_heads * H), types["attn_output.weight"])
    put(p + "attn_norm.weight", norm(), types.get("attn_norm.weight", "F32"))
    put(p + "ffn_norm.weight", norm(), "F32")
    put(p + "ffn_gate.weight", mat(d_ff, d), types["ffn_gate.weight"])
    put(p + "ffn_up.weight", mat(d_ff, d), types["ffn_up.weight"])
    put(p + "ffn_down.weight", mat(d, d_ff), types["ffn_down.weight"])
    hf[f"q{i}"], hf[f"k{i}"] = q, k
  put("output_norm.weight", norm(), "F32")
  if not tied:
    put("output.weight", mat(V, d), types["output.weight"])
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return hf
