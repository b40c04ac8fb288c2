"""Offline corpora, tokenisation, packing and checkpointable batch iterators.

Size (just over 500 lines): corpora, tokenisers, packing, iterators and the run-data builder of the trainer.

Corpora come from this machine only (no network):

* ``python``: the Python standard library's own sources (``sysconfig`` ``stdlib`` path, never
  ``site-packages``; ``test/``, ``tests/``, ``idle_test/`` excluded), split train/validation by file with a
  stable hash of the relative path (5 % validation).
* ``gcide``: Webster 1913 + WordNet glosses from the Debian package ``dict-gcide``
  (``/usr/share/dictd/gcide.dict.dz``), one document per dictionary entry group, split by a stable hash.
* ``pydoc``: English prose from the standard library's ``pydoc_data/topics.py`` (the language reference's
  topics, ~465 KB of text; every CPython install has it), ~2 KB paragraph documents split by a stable hash.
* ``passkey``: synthetic long-context retrieval (a pass key hidden in code filler, asked for at the end),
  generated deterministically from a seed: the quality probe for sparse attention and KV eviction.

Documents are tokenised (byte-level, or a BPE trained with ``tokenizers``), joined with EOS and packed into
fixed-length rows of ``seq_len + 1`` tokens (inputs = row[:-1], targets = row[1:]). ``PackedIterator``
yields shuffled batches and has an explicit JSON state (epoch, cursor) that is checkpointed with the model,
so a resumed run sees exactly the batches an uninterrupted one would. ``MixtureIterator`` draws each row's
source by ratio from a per-step seeded generator.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import sysconfig
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jaxeff.tokenizer import ByteTokenizer

if TYPE_CHECKING:  # annotations only: the config module imports this one
  from jaxeff.training.config import TrainConfig

GCIDE_PATH = Path("/usr/share/dictd/gcide.dict.dz")
_EXCLUDED_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}


class CorpusMissingError(FileNotFoundError):
  """A corpus needs a package that is not installed on this machine."""


def _stable_bucket(key: str, buckets: int = 20) -> int:
  return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) % buckets


def _split_of(key: str) -> str:
  return "validation" if _stable_bucket(key) == 0 else "train"


def python_stdlib_files(split: str = "train", root: str | os.PathLike | None = None) -> list[Path]:
  """Sorted ``.py`` files of the standard library for ``split`` ('train' | 'validation' | 'all')."""
  if split not in ("train", "validation", "all"):
    raise ValueError(f"split must be 'train', 'validation' or 'all', got {split!r}")
  base = Path(root or sysconfig.get_paths()["stdlib"])
  if not base.is_dir():
    raise CorpusMissingError(f"Python standard library sources not found at {base}")
  out = []
  for path in sorted(base.rglob("*.py")):
    rel = path.relative_to(base)
    if any(part in _EXCLUDED_DIRS for part in rel.parts[:-1]):
      continue
    if split == "all" or _split_of(str(rel)) == split:
      out.append(path)
  if not out:
    raise CorpusMissingError(f"no Python sources for split {split!r} under {base}")
  return out


def gcide_documents(split: str = "train", path: str | os.PathLike = GCIDE_PATH) -> list[str]:
  """Dictionary entries of GCIDE, grouped ~20 per document, for ``split``."""
  path = Path(path)
  if not path.is_file():
    raise CorpusMissingError(
      f"the natural-language corpus needs the Debian package dict-gcide ({path} is missing): "
      "run `apt-get install dict-gcide` or `jaxeff corpora --install`"
    )
  with gzip.open(path, "rt", encoding="utf-8", errors="replace") as fh:
    text = fh.read()
  entries = [e.strip() for e in text.split("\n\n") if e.strip()]
  docs = ["\n\n".join(entries[i : i + 20]) for i in range(0, len(entries), 20)]
  if split == "all":
    return docs
  return [d for i, d in enumerate(docs) if _split_of(f"gcide/{i}") == split]


def pydoc_documents(split: str = "train", root: str | os.PathLike | None = None) -> list[str]:
  """The prose topics of ``pydoc_data/topics.py`` (read as a literal, never imported from site-packages) as
  ~2 KB documents of whole paragraphs (topics sorted by name), each assigned to ``split`` ('train' |
  'validation' | 'all') by a stable hash of (topic, chunk)."""
  import ast

  if split not in ("train", "validation", "all"):
    raise ValueError(f"split must be 'train', 'validation' or 'all', got {split!r}")
  path = Path(root or sysconfig.get_paths()["stdlib"]) / "pydoc_data" / "topics.py"
  if not path.is_file():
    raise CorpusMissingError(f"the prose corpus needs the standard library's {path}")
  tree = ast.parse(path.read_text(encoding="utf-8"))
  topics = next(
    ast.literal_eval(n.value)
    for n in tree.body
    if isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "topics" for t in n.targets)
  )
  return [  # ~2 KB documents of whole paragraphs, each split by its own key
    block
    for k in sorted(topics)
    for i, block in enumerate(paragraph_blocks(topics[k]))
    if split == "all" or _split_of(f"pydoc/{k}/{i}") == split
  ]


def paragraph_blocks(text: str, size: int = 2000) -> list[str]:
  """``text`` cut into documents of whole blank-line-separated paragraphs, each closed once it holds ``size``
  characters (the last one holds the rest)."""
  blocks, cur, n = [], [], 0
  for para in text.split("\n\n"):
    cur.append(para)
    n += len(para)
    if n >= size:
      blocks.append("\n\n".join(cur))
      cur, n = [], 0
  return blocks + (["\n\n".join(cur)] if cur else [])


USER_CORPUS_PREFIXES = ("text:", "jsonl:", "hf:")


def user_documents(spec: str) -> list[str]:
  """All documents of a user corpus ``spec``:

  * ``text:PATH``: a UTF-8 text file (one document per blank-line-separated block of about 2 KB, whole
    paragraphs) or a folder (every ``.txt`` / ``.md`` / ``.py`` / ``.rst`` file below it is one document);
  * ``jsonl:PATH`` or ``jsonl:PATH#FIELD``: one JSON object per line, its ``FIELD`` (default ``text``);
  * ``hf:PATH`` or ``hf:PATH#FIELD``: a Hugging Face dataset saved with ``save_to_disk`` (the ``datasets``
    extra), its ``FIELD`` column (default ``text``).

  Every problem (missing path, a line that is not JSON, a missing field) raises ``ValueError`` naming it."""

  from jaxeff.io import read_text

  kind, _, rest = spec.partition(":")
  path, _, field = rest.partition("#")
  field = field or "text"
  p = Path(path)
  if not p.exists():
    raise ValueError(f"corpus {spec!r}: {p} does not exist")
  if kind == "text":
    if p.is_dir():
      files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in (".txt", ".md", ".py", ".rst"))
      return [f.read_text(encoding="utf-8", errors="replace") for f in files]
    return paragraph_blocks(read_text(p, "corpus file"))
  if kind == "jsonl":
    from jaxeff.io import read_jsonl

    return [row[field] for row in read_jsonl(p, {field: str}, nonempty=True)]
  if kind == "hf":
    from jaxeff.io import require

    ds = require("datasets", f"corpus {spec!r} (a Hugging Face dataset folder)", "datasets").load_from_disk(str(p))
    if field not in ds.column_names:
      raise ValueError(f"corpus {spec!r}: no column {field!r} (columns: {ds.column_names})")
    return [str(t) for t in ds[field]]
  raise ValueError(f"unknown corpus kind {kind!r} in {spec!r}; use text:, jsonl: or hf:")


def corpus_texts(name: str, split: str = "train", *, max_documents: int | None = None) -> list[str]:
  """The documents of corpus ``name`` for ``split``, as strings: the offline 'python' | 'gcide' | 'pydoc', or a
  user corpus ``text:PATH`` / ``jsonl:PATH[#FIELD]`` / ``hf:PATH[#FIELD]`` (``user_documents``), split by a hash
  of each document's index (1 in 20 to validation, the same every run).

  Example:
    >>> len(corpus_texts("python", "validation", max_documents=3))
    3
  """
  if name.startswith(USER_CORPUS_PREFIXES):
    docs = user_documents(name)
    keep = [d for i, d in enumerate(docs) if split == "all" or _split_of(f"user/{i}") == split]
    if not keep:
      raise ValueError(f"corpus {name!r} has no {split} documents ({len(docs)} in all; 1 in 20 go to validation)")
    return keep[:max_documents]
  if name == "python":
    files = python_stdlib_files(split)[:max_documents]
    return [f.read_text(encoding="utf-8", errors="replace") for f in files]
  if name == "gcide":
    return gcide_documents(split)[:max_documents]
  if name == "pydoc":
    return pydoc_documents(split)[:max_documents]
  raise ValueError(f"unknown corpus {name!r}; choose 'python', 'gcide' or 'pydoc' (or the synthetic 'passkey')")


def load_corpus(name: str, split: str = "train", *, max_documents: int | None = None):
  """``corpus_texts`` as a ``datasets.Dataset`` with one ``text`` column (needs the ``datasets`` extra).

  Example:
    >>> ds = load_corpus("python", "validation", max_documents=3)
    >>> ds.column_names
    ['text']
  """
  from jaxeff.io import require

  datasets = require("datasets", "load_corpus (a datasets.Dataset)", "datasets")
  return datasets.Dataset.from_dict({"text": corpus_texts(name, split, max_documents=max_documents)})


# ----------------------------------------------------------------------------------------------- tokenisers
def train_bpe(texts: Sequence[str], vocab_size: int, save_dir: str | os.PathLike | None = None):
  """Train a byte-level BPE tokenizer (``tokenizers``) with <bos>, <eos>, <pad>; save it in HF format.

  Saves ``tokenizer.json`` plus ``tokenizer_config.json`` / ``special_tokens_map.json`` so
  ``transformers.AutoTokenizer.from_pretrained(save_dir)`` loads it offline. Returns a ``jaxeff.tokenizer.HFTokenizer``.
  """
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

  from jaxeff.tokenizer import HFTokenizer

  if vocab_size < 300:
    raise ValueError(f"BPE vocab_size must be >= 300 (256 bytes + specials + merges), got {vocab_size}")
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
    vocab_size=vocab_size,
    special_tokens=["<bos>", "<eos>", "<pad>"],
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    show_progress=False,
  )
  tok.train_from_iterator(texts, trainer=trainer)
  if save_dir is None:
    import tempfile

    save_dir = tempfile.mkdtemp(prefix="jaxeff_bpe_")
  save_tokenizer_files(tok, save_dir)
  return HFTokenizer(Path(save_dir) / "tokenizer.json", tok.token_to_id("<bos>"), tok.token_to_id("<eos>"))


def save_tokenizer_files(tok, save_dir: str | os.PathLike) -> None:
  """Write ``tok`` as HF tokenizer files (tokenizer.json + configs) into ``save_dir``."""
  import json

  from tokenizers import processors

  save_dir = Path(save_dir)
  save_dir.mkdir(parents=True, exist_ok=True)
  bos = tok.token_to_id("<bos>")
  if bos is not None:  # jaxeff's models are trained with <bos> in front: transformers adds it too
    tok.post_processor = processors.TemplateProcessing(
      single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", bos)]
    )
  tok.save(str(save_dir / "tokenizer.json"))
  specials = {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>"}
  (save_dir / "special_tokens_map.json").write_text(json.dumps(specials, indent=2))
  cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 1_000_000, **specials}
  (save_dir / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))


def token_byte_lengths(tokenizer, vocab_size: int) -> np.ndarray:
  """UTF-8 bytes each token id stands for (0 for specials and unused ids): for bits-per-byte."""
  out = np.zeros(vocab_size, np.int32)
  if isinstance(tokenizer, ByteTokenizer):
    out[:256] = 1
    return out
  inner = tokenizer._tok
  from tokenizers import decoders

  dec = decoders.ByteLevel()
  for i in range(min(vocab_size, inner.get_vocab_size())):
    piece = inner.id_to_token(i)
    if piece is None or (piece.startswith("<") and piece.endswith(">") and inner.token_to_id(piece) < 3):
      continue
    out[i] = len(dec.decode([piece]).encode("utf-8"))
  return out


# ----------------------------------------------------------------------------------------------- packing
def pack_documents(token_lists: Sequence[Sequence[int]], seq_len: int, eos_id: int) -> np.ndarray:
  """Join documents with EOS and cut into rows of ``seq_len + 1`` tokens (the tail that does not fill a row
  is dropped). Returns int32 [rows, seq_len + 1]."""
  if seq_len < 1:
    raise ValueError(f"seq_len must be >= 1, got {seq_len}")
  total = sum(len(t) + 1 for t in token_lists)
  flat = np.empty(total, np.int32)
  i = 0
  for t in token_lists:
    flat[i : i + len(t)] = t
    flat[i + len(t)] = eos_id
    i += len(t) + 1
  rows = total // (seq_len + 1)
  if rows == 0:
    raise ValueError(f"corpus of {total} tokens cannot fill one row of {seq_len + 1}")
  return flat[: rows * (seq_len + 1)].reshape(rows, seq_len + 1)


@dataclasses.dataclass
class Batch:
  """inputs/targets int32 [B, T]; loss_mask float32 [B, T] (1 = counted)."""

  inputs: np.ndarray
  targets: np.ndarray
  loss_mask: np.ndarray


class PackedIterator:
  """Shuffled batches over packed rows, reshuffled every epoch; its state is a small JSON dict.

  The permutation of epoch e is ``default_rng([seed, e]).permutation(rows)``; the state is
  ``{"epoch": e, "cursor": c}``, so ``set_state(get_state())`` reproduces the next batch exactly.
  ``loss_masks`` (optional, same shape as ``rows`` minus one column) restricts the loss to some targets.
  """

  def __init__(self, rows: np.ndarray, batch_size: int, seed: int = 0, loss_masks: np.ndarray | None = None):
    if rows.ndim != 2 or rows.shape[1] < 2:
      raise ValueError(f"rows must be [N, seq_len + 1], got shape {rows.shape}")
    if batch_size < 1 or batch_size > rows.shape[0]:
      raise ValueError(f"batch_size {batch_size} must be in [1, {rows.shape[0]}] (rows available)")
    self.rows, self.batch_size, self.seed = rows, batch_size, seed
    self.loss_masks = loss_masks
    self.epoch, self.cursor = 0, 0
    self._perm = self._permutation(0)

  def _permutation(self, epoch: int) -> np.ndarray:
    return np.random.default_rng([self.seed, epoch]).permutation(self.rows.shape[0])

  def take(self, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The next ``n`` rows (and their loss masks)."""
    idx = []
    while len(idx) < n:
      if self.cursor >= len(self._perm):
        self.epoch, self.cursor = self.epoch + 1, 0
        self._perm = self._permutation(self.epoch)
      take = min(n - len(idx), len(self._perm) - self.cursor)
      idx.extend(self._perm[self.cursor : self.cursor + take])
      self.cursor += take
    idx = np.asarray(idx)
    return self.rows[idx], (self.loss_masks[idx] if self.loss_masks is not None else None)

  def __iter__(self) -> Iterator[Batch]:
    return self

  def __next__(self) -> Batch:
    rows, masks = self.take(self.batch_size)
    return _to_batch(rows, masks)

  def get_state(self) -> dict[str, Any]:
    return {"epoch": int(self.epoch), "cursor": int(self.cursor)}

  def set_state(self, state: dict[str, Any]) -> None:
    self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
    self._perm = self._permutation(self.epoch)


def _to_batch(rows: np.ndarray, masks: np.ndarray | None) -> Batch:
  inputs, targets = rows[:, :-1], rows[:, 1:]
  mask = np.ones(targets.shape, np.float32) if masks is None else masks.astype(np.float32)
  return Batch(np.ascontiguousarray(inputs), np.ascontiguousarray(targets), mask)


class MixtureIterator:
  """Rows drawn from several iterators by ratio: row r of step s comes from source
  ``default_rng([seed, s]).choice(len(sources), p=weights)``. State = step + every source's state."""

  def __init__(self, sources: Sequence[PackedIterator], weights: Sequence[float], batch_size: int, seed: int = 0):
    if len(sources) != len(weights) or not sources:
      raise ValueError("MixtureIterator needs one weight per source")
    w = np.asarray(weights, np.float64)
    if np.any(w < 0) or w.sum() <= 0:
      raise ValueError(f"mixture weights must be >= 0 with a positive sum, got {list(weights)}")
    lens = {s.rows.shape[1] for s in sources}
    if len(lens) != 1:
      raise ValueError(f"mixture sources must share seq_len, got row lengths {sorted(lens)}")
    self.sources, self.p, self.batch_size, self.seed, self.step = list(sources), w / w.sum(), batch_size, seed, 0

  def __iter__(self):
    return self

  def __next__(self) -> Batch:
    choice = np.random.default_rng([self.seed, self.step]).choice(len(self.sources), size=self.batch_size, p=self.p)
    self.step += 1
    width = self.sources[0].rows.shape[1]
    rows = np.empty((self.batch_size, width), np.int32)
    masks = np.ones((self.batch_size, width - 1), np.float32)
    for k, src in enumerate(self.sources):
      where = np.flatnonzero(choice == k)
      if len(where):
        r, m = src.take(len(where))
        rows[where] = r
        if m is not None:
          masks[where] = m
    return _to_batch(rows, masks)

  def get_state(self) -> dict[str, Any]:
    return {"step": self.step, "sources": [s.get_state() for s in self.sources]}

  def set_state(self, state: dict[str, Any]) -> None:
    self.step = int(state["step"])
    for s, st in zip(self.sources, state["sources"]):
      s.set_state(st)


# ----------------------------------------------------------------------------------------------- passkey
PASSKEY_PROMPT = "\n# What is the pass key? The pass key is "
KEY_MARKER_ID = 259  # a byte-tokenizer id no text produces: marks where the key starts
KEY_SYMBOL_BASE = 260  # key digit j with value v is id 260 + 10 j + v (ids 260..309): outside the 256 bytes
KEY_MAX_DIGITS = 5
PASSKEY_VOCAB = KEY_SYMBOL_BASE + 10 * KEY_MAX_DIGITS  # a model vocab that holds every pass-key id (310)


def passkey_example(filler: np.ndarray, length: int, rng: np.random.Generator, tokenizer=None, digits: int = 5):
  """One retrieval row of ``length + 1`` byte-level tokens.

  Layout: ``<bos> filler[:depth] NEEDLE filler[depth:] QUESTION ANSWER`` where NEEDLE is
  ``"\n# The pass key is " <k> s_0..s_{digits-1} ".\n"``, QUESTION is
  ``"\n# What is the pass key? The pass key is " <k>`` and ANSWER is ``s_0..s_{digits-1}``. ``<k>`` is id 259 and
  digit j of value v is the symbol ``260 + 10 j + v``: every id lies outside the 256 bytes, so the filler
  never contains them, and each answer token is the one symbol of its digit's set in the context. Answering
  therefore needs attention to reach the needle from the end of the prompt (what sparse prefill and KV eviction
  must preserve), not an induction circuit: a 2-layer byte model learns that in hundreds of steps, while
  plain ASCII digits (the passkey prompts of the long-context literature) or shared key symbols need
  copy-by-position induction, which stayed on a loss plateau for thousands of steps here (measured).

  Returns (row [length+1], loss mask [length] on the answer targets, index of the answer's first token).
  """
  tok = tokenizer or ByteTokenizer()
  if not 1 <= digits <= KEY_MAX_DIGITS:
    raise ValueError(f"a pass key has 1 to {KEY_MAX_DIGITS} digits, got digits={digits}")
  key = KEY_SYMBOL_BASE + 10 * np.arange(digits) + rng.integers(0, 10, size=digits)
  needle = (
    tok.encode("\n# The pass key is ", add_bos=False)
    + [KEY_MARKER_ID, *key.tolist()]
    + tok.encode(".\n", add_bos=False)
  )
  question = tok.encode(PASSKEY_PROMPT, add_bos=False) + [KEY_MARKER_ID]
  answer = key.tolist()
  n_fill = length + 1 - len(needle) - len(question) - len(answer) - 1
  if n_fill < 8:
    raise ValueError(f"passkey length {length} too short for the needle and question")
  start = int(rng.integers(0, len(filler) - n_fill))
  fill = filler[start : start + n_fill]
  depth = int(rng.integers(0, n_fill + 1))
  row = np.concatenate([[tok.bos_id], fill[:depth], needle, fill[depth:], question, answer]).astype(np.int32)
  mask = np.zeros(length, np.float32)
  ans_at = len(row) - len(answer)
  mask[ans_at - 1 : ans_at - 1 + len(answer)] = 1.0  # targets are row[1:]
  return row, mask, ans_at


def passkey_rows(filler: np.ndarray, n: int, length: int, seed: int, digits: int = 5):
  """``n`` passkey rows [n, length+1] with loss masks on the answer only [n, length]."""
  rng = np.random.default_rng([seed, length])
  rows, masks = [], []
  for _ in range(n):
    r, m, _ = passkey_example(filler, length, rng, digits=digits)
    rows.append(r)
    masks.append(m)
  return np.stack(rows), np.stack(masks)


def tokenize_corpus(name: str, split: str, tokenizer, *, max_documents: int | None = None) -> list[list[int]]:
  """Token ids (no BOS) of every document of the offline corpus ``name`` / ``split``."""
  return [tokenizer.encode(t, add_bos=False) for t in corpus_texts(name, split, max_documents=max_documents)]


def eval_batches(
  tokenizer,
  corpus: str,
  split: str,
  *,
  seq_len: int,
  batch_size: int,
  n_batches: int,
  max_documents: int | None = None,
  seed: int = 0,
) -> list:
  """Held-out batches for ``trainer.evaluate``: ``corpus`` / ``split`` tokenized, joined with EOS, packed into
  rows of ``seq_len + 1`` tokens, and the first ``n_batches`` batches of a ``seed``-shuffled pass (``batch_size``
  rows each, at most the number of rows). Bits per byte: ``evaluate(params, batches, config=config,
  byte_lengths=token_byte_lengths(tokenizer, config.vocab_size))``."""
  docs = tokenize_corpus(corpus, split, tokenizer, max_documents=max_documents)
  eos = tokenizer.eos_id if tokenizer.eos_id is not None else 0
  rows = pack_documents(docs, seq_len, eos)
  it = PackedIterator(rows, min(batch_size, len(rows)), seed=seed)
  return [next(it) for _ in range(n_batches)]


def byte_tokenizer_json():
  """A ``tokenizers.Tokenizer`` equal to ``ByteTokenizer``: byte b -> id b, <bos>/<eos>/<pad> = 256/257/258."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers

  alphabet = _bytes_to_unicode()
  vocab = {alphabet[b]: b for b in range(256)}
  vocab.update({"<bos>": 256, "<eos>": 257, "<pad>": 258})
  tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
  tok.decoder = decoders.ByteLevel()
  tok.add_special_tokens(["<bos>", "<eos>", "<pad>"])
  return tok


def _bytes_to_unicode() -> dict[int, str]:
  """GPT-2's reversible byte -> printable-unicode map (the ByteLevel pre-tokenizer's alphabet)."""
  bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
  cs = bs[:]
  n = 0
  for b in range(256):
    if b not in bs:
      bs.append(b)
      cs.append(256 + n)
      n += 1
  return {b: chr(c) for b, c in zip(bs, cs)}


def save_byte_tokenizer(save_dir: str | os.PathLike) -> None:
  """Write the byte tokenizer in HF format (tokenizer.json + configs) into ``save_dir``."""
  save_tokenizer_files(byte_tokenizer_json(), save_dir)


# ----------------------------------------------------------------------------------------------- row files
def save_rows(path: str | os.PathLike, rows: np.ndarray, masks: np.ndarray) -> Path:
  """Write pre-tokenised training rows [n, L + 1] and loss masks [n, L] as an ``npz`` corpus (``npz:PATH``)."""
  rows, masks = np.asarray(rows, np.int32), np.asarray(masks, np.float32)
  if rows.ndim != 2 or masks.shape != (rows.shape[0], rows.shape[1] - 1):
    raise ValueError(f"rows [n, L+1] and masks [n, L] expected, got {rows.shape} and {masks.shape}")
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + ".tmp.npz")
  np.savez(tmp, rows=rows, masks=masks)
  os.replace(tmp, path)
  return path


def load_rows(path: str | os.PathLike, split: str, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
  """Rows and masks of an ``npz`` corpus; every 20th row is the validation split (all rows if fewer than 20)."""
  with np.load(path) as z:
    rows, masks = z["rows"], z["masks"]
  if rows.shape[1] != seq_len + 1:
    raise ValueError(f"{path} holds rows of length {rows.shape[1]}, the run needs seq_len + 1 = {seq_len + 1}")
  val = np.arange(len(rows)) % 20 == 19
  if len(rows) < 20:
    return rows, masks
  sel = val if split == "validation" else ~val
  return rows[sel], masks[sel]


# ------------------------------------------------------------------------------------------------ data
SYNTHETIC = ("passkey", "arith")  # byte-level synthetic corpora


@dataclasses.dataclass
class RunData:
  tokenizer: Any
  train: Iterator
  validation_batches: Callable[[], list]
  byte_lengths: np.ndarray
  vocab_size: int


def build_data(config: TrainConfig, workdir: Path | None = None) -> RunData:
  """Tokeniser, training mixture iterator and a validation-batch factory for ``config``."""
  from jaxeff.tokenizer import ByteTokenizer

  if config.tokenizer == "byte":
    tok = ByteTokenizer()
    vocab = config.model.vocab_size
    if vocab < tok.vocab_size:
      raise ValueError(f"model vocab {vocab} is smaller than the byte tokenizer's {tok.vocab_size}")
  elif config.tokenizer == "init_from":  # fine-tuning a real model: its own tokenizer and vocabulary
    from jaxeff.tokenizer import load_tokenizer

    tok = load_tokenizer(config.init_from, config=config.model)
    vocab = config.model.vocab_size
  else:
    texts = []
    for c in config.corpora:
      if c not in SYNTHETIC and not c.startswith("npz:"):
        texts += corpus_texts(c, "train", max_documents=config.max_documents)
    tok_dir = (workdir / "tokenizer") if workdir is not None else None
    if tok_dir is not None and (tok_dir / "tokenizer.json").is_file():
      from jaxeff.tokenizer import HFTokenizer

      tok = HFTokenizer(tok_dir / "tokenizer.json", 0, 1)
    else:
      tok = train_bpe(texts, config.bpe_vocab, tok_dir)
    vocab = config.bpe_vocab
  eos = tok.eos_id
  L = config.seq_len

  def source(name, split, seed):
    if name.startswith("npz:"):  # pre-tokenised rows + loss masks (e.g. code-translation pairs)
      return load_rows(name[4:], split, L)
    if name in SYNTHETIC:
      n = config.passkey_rows if split == "train" else max(config.eval_batches * config.batch_size, 8)
      seed = seed + (0 if split == "train" else 7919)
      if name == "arith":
        from jaxeff.tasks.arith import arith_rows

        return arith_rows(n, L, seed=seed, split=split, tokenizer=tok)
      filler = np.concatenate(tokenize_corpus("python", split, tok, max_documents=config.max_documents))
      return passkey_rows(filler, n, L, seed=seed)
    docs = tokenize_corpus(name, split, tok, max_documents=config.max_documents)
    return pack_documents(docs, L, eos), None

  train_sources = []
  for k, name in enumerate(config.corpora):
    rows, masks = source(name, "train", config.seed)
    train_sources.append(PackedIterator(rows, min(config.batch_size, len(rows)), config.seed + k, masks))
  train = MixtureIterator(train_sources, config.weights, config.batch_size, config.seed)
  val_sets = [source(name, "validation", config.seed) for name in config.corpora]

  def validation_batches():
    out = []
    for k, (rows, masks) in enumerate(val_sets):
      it = PackedIterator(rows, min(config.batch_size, len(rows)), seed=1234 + k, loss_masks=masks)
      out += [next(it) for _ in range(config.eval_batches)]
    return out

  return RunData(tok, train, validation_batches, token_byte_lengths(tok, vocab), vocab)
