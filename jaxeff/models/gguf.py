"""GGUF checkpoints (llama.cpp's format) -> jaxeff ``(config, params)`` and a Hugging Face folder.

A GGUF file holds the model's hyper-parameters and tokenizer as key/value metadata and every weight as a
(possibly block-quantized) tensor. ``load_gguf`` reads it with the ``gguf`` package (``GGUFReader``: a
memory map, numpy only), dequantizes each tensor to float32 (``gguf.quants.dequantize``), maps llama.cpp's
tensor names onto jaxeff's parameter table, undoes llama.cpp's rotary row permutation of ``attn_q`` /
``attn_k`` (Llama family), and builds the tokenizer and chat template from the metadata the way transformers'
GGUF loader converts them. ``gguf_to_hf`` writes the result as a HF folder (``save_hf`` + ``tokenizer.json``
+ ``tokenizer_config.json``) that transformers and ``load_hf`` load.

llama.cpp name            jaxeff leaf                      note
========================  ===============================  ==========================================
``token_embd``            ``embed`` [V, D]
``blk.N.attn_norm``       ``layers[N].attn_norm`` [D]
``blk.N.attn_q``          ``layers[N].attn.q`` [N, H, D]   rows un-permuted per head (llama only)
``blk.N.attn_k``          ``layers[N].attn.k`` [K, H, D]   rows un-permuted per kv head (llama only)
``blk.N.attn_v``          ``layers[N].attn.v`` [K, H, D]
``blk.N.attn_output``     ``layers[N].attn.o`` [D, N, H]
``blk.N.attn_{q,k,v}``    ``...q_bias`` etc. (``.bias``)   qwen2
``blk.N.attn_{q,k}_norm`` ``...q_norm`` / ``k_norm`` [H]   qwen3
``blk.N.ffn_norm``        ``layers[N].mlp_norm`` [D]
``blk.N.post_attention_norm`` ``layers[N].attn_post_norm``  gemma3 (sandwich norms; llama.cpp stores 1 + w)
``blk.N.post_ffw_norm``   ``layers[N].mlp_post_norm``      gemma3
``blk.N.ffn_{gate,up}``   ``layers[N].mlp.gate/up`` [F, D]
``blk.N.ffn_down``        ``layers[N].mlp.down`` [D, F]
``output_norm``           ``final_norm`` [D]
``output``                ``lm_head`` [V, D]               absent when tied
========================  ===============================  ==========================================

The numpy view of a GGUF tensor is already torch's ``[out, in]`` (GGUF lists dimensions innermost first), so
every mapping is a reshape, as in ``hf_io.hf_table``.

Reference: llama.cpp's ``gguf-py`` and ``convert_hf_to_gguf.py`` (``LlamaModel.permute``); transformers'
``modeling_gguf_pytorch_utils.py`` (``LlamaTensorProcessor._reverse_permute_weights``) and
``integrations/gguf/gguf_tokenizer_mapping.py``.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxeff.config import ModelConfig, RopeScaling, UnsupportedConfigError
from jaxeff.config.hf import gemma_layer_types
from jaxeff.models.hf_io import CheckpointError, _atomic_write_bytes, check_checkpoint, hf_table, save_hf

# Tensor types whose dequantizers jaxeff accepts (gguf-py implements them; transformers' loader too).
SUPPORTED_TENSOR_TYPES = ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K")
SUPPORTED_TENSOR_TYPES += ("Q4_K", "Q5_K", "Q6_K")
SUPPORTED_ARCHITECTURES = ("llama", "qwen2", "qwen3", "gemma3")
# llama.cpp's converter interleaves the rotary halves of q/k rows for these (``LlamaModel.permute``).
_PERMUTED = ("llama",)
# byte-level BPE (built here) and SentencePiece (built by transformers' GGUF tokenizer builders)
_TOKENIZER_TYPES = ("gpt2", "llama")


def _require_gguf():
  try:
    import gguf
  except ImportError:
    raise ImportError("reading GGUF files needs the 'gguf' package: pip install gguf") from None
  return gguf


class GGUFFile:
  """A validated GGUF file: its metadata as plain Python values and its tensors (not yet dequantized).

  Raises ``CheckpointError`` for a missing, truncated or corrupt file, before any tensor is read.
  """

  def __init__(self, path: str | os.PathLike):
    gguf = _require_gguf()
    self.path = Path(path)
    if not self.path.is_file():
      raise CheckpointError(f"GGUF file not found: {self.path}")
    size = self.path.stat().st_size
    try:
      reader = gguf.GGUFReader(str(self.path), "r")
    except Exception as e:  # the reader raises ValueError / struct / numpy errors on a bad header
      raise CheckpointError(f"corrupt or truncated GGUF file {self.path}: {type(e).__name__}: {e}") from None
    self.metadata: dict[str, Any] = {}
    for key, field in reader.fields.items():
      try:
        self.metadata[key] = field.contents()
      except Exception as e:
        raise CheckpointError(f"corrupt GGUF metadata {key!r} in {self.path}: {e}") from None
    self.tensors = {t.name: t for t in reader.tensors}
    bad = []
    for t in reader.tensors:
      end = int(t.data_offset) + int(t.n_bytes)
      if end > size or t.data.nbytes != int(t.n_bytes):
        bad.append(f"{t.name} ends at byte {end} of {size}")
    if bad:
      raise CheckpointError(f"truncated GGUF file {self.path}: {len(bad)} tensors past its end ({'; '.join(bad[:5])})")
    self._reader = reader

  @property
  def architecture(self) -> str:
    return str(self.metadata.get("general.architecture", ""))

  def tensor_types(self) -> dict[str, str]:
    return {name: t.tensor_type.name for name, t in self.tensors.items()}

  def dequantize(self, name: str) -> np.ndarray:
    """Tensor ``name`` as float32 in torch layout (``[out, in]`` for matrices)."""
    gguf = _require_gguf()
    t = self.tensors[name]
    kind = t.tensor_type.name
    shape = tuple(int(d) for d in reversed(t.shape.tolist()))
    if kind == "F32":
      w = np.asarray(t.data, np.float32)
    elif kind == "F16":
      w = np.asarray(t.data).astype(np.float32)
    else:
      w = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32, copy=False)
    return w.reshape(shape)


def gguf_config(meta: dict[str, Any], tensor_names: set[str] | None = None) -> ModelConfig:
  """A ``ModelConfig`` from GGUF metadata (``general.architecture`` and its ``{arch}.*`` keys).

  Raises:
    UnsupportedConfigError: an architecture other than ``SUPPORTED_ARCHITECTURES``, RoPE scaling other than
      linear (``rope.scaling.type``; llama.cpp stores Llama 3's as a ``rope_freqs`` tensor: refused), a rotary
      dimension other than the head dimension, or missing required keys (all named at once).
  """
  arch = str(meta.get("general.architecture", ""))
  if arch not in SUPPORTED_ARCHITECTURES:
    raise UnsupportedConfigError(
      f"unsupported GGUF architecture {arch!r}; jaxeff reads {', '.join(SUPPORTED_ARCHITECTURES)}"
    )
  a = lambda k: f"{arch}.{k}"
  required = ["block_count", "embedding_length", "feed_forward_length", "attention.head_count"]
  missing = [a(k) for k in required if a(k) not in meta]
  if missing:
    raise UnsupportedConfigError(f"GGUF metadata lacks {', '.join(missing)}")
  d = int(meta[a("embedding_length")])
  n_heads = int(meta[a("attention.head_count")])
  n_kv = int(meta.get(a("attention.head_count_kv"), n_heads))
  head_dim = int(meta.get(a("attention.key_length"), d // n_heads))
  problems = []
  if int(meta.get(a("attention.value_length"), head_dim)) != head_dim:
    problems.append("attention.value_length differs from key_length")
  rot = int(meta.get(a("rope.dimension_count"), head_dim))
  if rot != head_dim:
    problems.append(f"rope.dimension_count={rot} (partial rotary) with head_dim={head_dim}")
  scaling, factor = meta.get(a("rope.scaling.type")), float(meta.get(a("rope.scaling.factor"), 1.0))
  linear = scaling == "linear" and factor > 0 and factor != 1.0
  rope_scaling = RopeScaling(factor, rope_type="linear") if linear else None
  if scaling == "linear" and factor <= 0:
    problems.append(f"rope.scaling.factor={factor} (must be positive)")
  if scaling not in (None, "none", "linear") and factor != 1.0:
    problems.append(f"rope.scaling.type={scaling!r} (linear is implemented)")
  if "rope_freqs.weight" in (tensor_names or ()):
    problems.append(
      "rope_freqs.weight (llama.cpp's per-frequency RoPE factors, e.g. Llama 3.1's scaling, are not read)"
    )
  if problems:
    raise UnsupportedConfigError("unsupported GGUF settings: " + "; ".join(problems))
  vocab = meta.get(a("vocab_size"))
  if vocab is None:
    vocab = len(meta.get("tokenizer.ggml.tokens", ()))
  names = tensor_names or set()
  tied = "output.weight" not in names
  tok = lambda k: meta.get(f"tokenizer.ggml.{k}")
  extra: dict[str, Any] = {}
  if arch == "gemma3":  # llama.cpp's fixed Gemma 3 layout: every 6th layer global, local RoPE base 10^4
    n_layers = int(meta[a("block_count")])
    window = meta.get(a("attention.sliding_window"))
    types = gemma_layer_types(n_layers)
    cap, attn_cap = meta.get(a("final_logit_softcapping")), meta.get(a("attn_logit_softcapping"))
    extra = dict(
      model_type="gemma3_text",
      post_norms=True,
      embed_scale=True,
      mlp_activation="gelu_tanh",
      query_pre_attn_scalar=float(head_dim),  # llama.cpp: 1 / sqrt(head_dim) (27B excepted, not read here)
      final_logit_softcap=float(cap) if cap else None,
      attn_logit_softcap=float(attn_cap) if attn_cap else None,
      **(
        dict(sliding_window=int(window), layer_types=types, rope_local_theta=10_000.0)
        if window and "sliding_attention" in types
        else {}
      ),
    )
  return ModelConfig(
    vocab_size=int(vocab),
    d_model=d,
    n_layers=int(meta[a("block_count")]),
    n_heads=n_heads,
    n_kv_heads=n_kv,
    head_dim=head_dim,
    d_ff=int(meta[a("feed_forward_length")]),
    rms_norm_eps=float(meta.get(a("attention.layer_norm_rms_epsilon"), 1e-6)),
    rope_theta=float(meta.get(a("rope.freq_base"), 10000.0)),
    rope_scaling=rope_scaling,
    max_position_embeddings=int(meta.get(a("context_length"), 4096)),
    tie_embeddings=tied,
    qkv_bias=arch == "qwen2",
    qk_norm=arch in ("qwen3", "gemma3"),
    **({"model_type": arch} | extra),
    bos_token_id=tok("bos_token_id"),
    eos_token_id=tok("eos_token_id"),
    pad_token_id=tok("padding_token_id"),
  )


def _gguf_names(config: ModelConfig) -> dict[str, str]:
  """HF tensor name (``hf_io.hf_table``) -> llama.cpp tensor name."""
  out = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
  if not config.tie_embeddings:
    out["lm_head.weight"] = "output.weight"
  per_layer = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
  }
  if config.post_norms:  # Gemma: the sandwich norms (HF's post_attention_layernorm is the attention output's)
    per_layer.update(
      {
        "post_attention_layernorm.weight": "post_attention_norm.weight",
        "pre_feedforward_layernorm.weight": "ffn_norm.weight",
        "post_feedforward_layernorm.weight": "post_ffw_norm.weight",
      }
    )
  for i in range(config.n_layers):
    for hf, gg in per_layer.items():
      out[f"model.layers.{i}.{hf}"] = f"blk.{i}.{gg}"
  return out


def unpermute_rotary(w: np.ndarray, n_heads: int) -> np.ndarray:
  r"""Undo llama.cpp's q/k row permutation for one projection (weight ``[n_heads * H, D]`` or bias).

  llama.cpp stores each head's rows as interleaved rotary pairs; HF stores the two halves one after the other:
  ``hf[h, j * H/2 + i] = gguf[h, 2 i + j]`` for ``i < H/2``, ``j in {0, 1}``.

  Example:
    >>> unpermute_rotary(np.arange(4.0)[:, None], 1)[:, 0].tolist()
    [0.0, 2.0, 1.0, 3.0]
  """
  rows = w.shape[0]
  half = rows // n_heads // 2
  return w.reshape(n_heads, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def load_gguf(path: str | os.PathLike, *, dtype: Any = None) -> tuple[ModelConfig, dict[str, Any]]:
  """Load a GGUF checkpoint into ``(config, params)``: every tensor dequantized to float32.

  Args:
    path: a ``.gguf`` file (Llama, Qwen2 or Qwen3 architecture; tensor types ``SUPPORTED_TENSOR_TYPES``).
    dtype: parameter dtype (``None`` keeps float32, the dequantized values exactly).

  Returns:
    ``(ModelConfig, params)`` following ``jaxeff.models.decoder``'s table.

  Raises:
    CheckpointError: a missing, corrupt or truncated file; tensor types jaxeff cannot dequantize, or missing /
      mis-shaped tensors (each listed, all at once, before any tensor is dequantized).
    UnsupportedConfigError: an architecture or setting the decoder does not implement.

  Example:
    >>> config, params = load_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")  # doctest: +SKIP
  """
  return _load(GGUFFile(path), dtype)


def _load(f: GGUFFile, dtype: Any = None) -> tuple[ModelConfig, dict[str, Any]]:
  """``load_gguf`` on an already opened file."""
  config = gguf_config(f.metadata, set(f.tensors))
  names = _gguf_names(config)
  types = f.tensor_types()
  unsupported = sorted(f"{n} ({t})" for n, t in types.items() if t not in SUPPORTED_TENSOR_TYPES)
  if unsupported:
    raise CheckpointError(
      f"{f.path.name}: {len(unsupported)} tensors of unsupported types: {', '.join(unsupported[:8])}"
      f"{' ...' if len(unsupported) > 8 else ''}; jaxeff dequantizes {', '.join(SUPPORTED_TENSOR_TYPES)}"
    )
  table = hf_table(config)
  inverse = {g: h for h, g in names.items()}
  shapes = {}
  for gname, t in f.tensors.items():
    if gname in ("rope_freqs.weight",):
      continue
    hname = inverse.get(gname, f"<gguf:{gname}>")
    shapes[hname] = tuple(int(d) for d in reversed(t.shape.tolist()))
  try:
    check_checkpoint(config, shapes)
  except CheckpointError as e:
    raise CheckpointError(f"{f.path.name}: {e}") from None

  from jaxeff.models.hf_io import _empty_tree, _set_path

  params = _empty_tree(config)
  for entry in table:
    w = f.dequantize(names[entry.hf_name])
    if config.model_type in _PERMUTED and entry.hf_name.endswith(("q_proj.weight", "k_proj.weight")):
      w = unpermute_rotary(w, config.n_heads if "q_proj" in entry.hf_name else config.n_kv_heads)
    if not np.all(np.isfinite(w)):
      raise CheckpointError(f"{f.path.name}: tensor {names[entry.hf_name]} holds NaN or inf after dequantizing")
    w = entry.to_jax(w)  # Gemma's norms: llama.cpp stored 1 + w, which is jaxeff's leaf already (entry.offset)
    if dtype is not None:
      w = w.astype(dtype)
    _set_path(params, entry.path, jax.device_put(w))
  params["layers"] = tuple(params["layers"])
  return config, params


# ------------------------------------------------------------------------------------------ tokenizer
def gguf_tokenizer(meta: dict[str, Any]):
  """``(tokenizers.Tokenizer, tokenizer_config dict)`` from GGUF tokenizer metadata.

  Byte-level BPE (``tokenizer.ggml.model == 'gpt2'``): the vocabulary and merges as stored, GPT-2's split
  regex and byte-level pre-tokenizer / decoder, control tokens (type 3) added as special tokens and
  user-defined ones (type 4) as plain added tokens, and a post-processor prepending BOS only when
  ``add_bos_token`` is set. This is what transformers' GGUF converter builds for these files (tested token for
  token against it on SmolLM2, whose file sets no BOS). SentencePiece (``'llama'``: Gemma 3) through
  transformers' builders (``_sentencepiece_tokenizer``), with the same BOS post-processor (Gemma's file sets
  ``add_bos_token``, so ``<bos>`` is prepended as the Hub's Gemma tokenizer does).
  """
  from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

  kind = meta.get("tokenizer.ggml.model")
  if kind not in _TOKENIZER_TYPES:
    raise UnsupportedConfigError(
      f"GGUF tokenizer model {kind!r} is not converted by jaxeff (supported: {', '.join(_TOKENIZER_TYPES)})"
    )
  tokens = [str(t) for t in meta["tokenizer.ggml.tokens"]]
  if kind == "llama":
    tok = _sentencepiece_tokenizer(meta)
  else:
    merges = [tuple(str(m).split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", ())]
    kinds = [int(k) for k in meta.get("tokenizer.ggml.token_type", [1] * len(tokens))]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, kinds) if k == 3])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t, k in zip(tokens, kinds) if k == 4])
  bos_id = meta.get("tokenizer.ggml.bos_token_id")
  if meta.get("tokenizer.ggml.add_bos_token") and bos_id is not None:  # llama.cpp adds BOS: say so to transformers
    from tokenizers import processors

    b = tokens[int(bos_id)]
    tok.post_processor = processors.TemplateProcessing(
      single=f"{b} $A", pair=f"{b} $A {b} $B", special_tokens=[(b, int(bos_id))]
    )

  def name(key):
    i = meta.get(f"tokenizer.ggml.{key}")
    return tokens[int(i)] if i is not None and 0 <= int(i) < len(tokens) else None

  cfg = {
    "tokenizer_class": "PreTrainedTokenizerFast",
    "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False)),
    "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False)),
    "bos_token": name("bos_token_id"),
    "eos_token": name("eos_token_id"),
    "unk_token": name("unknown_token_id"),
    "pad_token": name("padding_token_id"),
    "model_max_length": int(meta.get(f"{meta.get('general.architecture')}.context_length", 2048)),
  }
  if "tokenizer.chat_template" in meta:
    cfg["chat_template"] = str(meta["tokenizer.chat_template"])
  return tok, {k: v for k, v in cfg.items() if v is not None}


def _sentencepiece_tokenizer(meta: dict[str, Any]):
  """A SentencePiece vocabulary (``tokenizer.ggml.model == 'llama'``: Llama 2, Gemma) as a ``tokenizers``
  object, built by transformers' own GGUF tokenizer builders (``convert_gguf_tokenizer``: for Gemma the merges
  are rebuilt from the vocabulary order and multi-space tokens respelled), so it is the tokenizer transformers'
  GGUF loader gives, by construction."""
  from jaxeff.io import require

  builders = require(
    "transformers.integrations.gguf.gguf_tokenizer_mapping", "converting a SentencePiece GGUF tokenizer (Gemma)", "hf"
  )
  renames = builders.GGUF_TOKENIZER_MAPPING["tokenizer"]
  tokenizer_dict = {name: meta[f"tokenizer.{key}"] for key, name in renames.items() if f"tokenizer.{key}" in meta}
  tokenizer_dict["tokens"] = [str(t) for t in tokenizer_dict["tokens"]]
  tok, _ = builders.convert_gguf_tokenizer(str(meta.get("general.architecture", "")), tokenizer_dict)
  return tok


def gguf_to_hf(
  gguf_path: str | os.PathLike, out_dir: str | os.PathLike, *, extra: dict | None = None, files: dict | None = None
) -> Path:
  """Convert a GGUF file into a HF folder (float32 safetensors, config, tokenizer, chat template).

  The folder is built beside ``out_dir`` and renamed into place, so an interrupted conversion never leaves a
  half-written folder under the final name. ``extra`` is written as ``SOURCE.json`` (provenance, licence);
  ``files`` (name -> bytes) are written beside it (e.g. the licence text).

  Example:
    >>> gguf_to_hf("model.gguf", "model-hf")  # doctest: +SKIP
  """
  src = GGUFFile(gguf_path)
  tok, tok_cfg = gguf_tokenizer(src.metadata)  # tokenizer errors before the weights are dequantized
  config, params = _load(src)
  out = Path(out_dir)
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
  try:
    save_hf(tmp, config, params)
    tok.save(str(tmp / "tokenizer.json"))
    _atomic_write_bytes(tmp / "tokenizer_config.json", json.dumps(tok_cfg, indent=2).encode())
    gen = {"bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id}
    _atomic_write_bytes(tmp / "generation_config.json", json.dumps(gen, indent=2).encode())
    meta = {
      k: src.metadata[k] for k in ("general.name", "general.license", "general.architecture") if k in src.metadata
    }
    info = {
      "gguf": Path(gguf_path).name,
      "metadata": meta,
      "tensor_types": dict(collections.Counter(src.tensor_types().values())),
      **(extra or {}),
    }
    _atomic_write_bytes(tmp / "SOURCE.json", json.dumps(info, indent=2).encode())
    for name, data in (files or {}).items():
      _atomic_write_bytes(tmp / name, data)
    if out.exists():
      shutil.rmtree(out)
    os.replace(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return out
