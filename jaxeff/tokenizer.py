"""Tokenizers: a built-in byte-level tokenizer and a wrapper over a HF folder's ``tokenizer.json``."""

from __future__ import annotations

import os
from pathlib import Path


class ByteTokenizer:
  """UTF-8 bytes as ids 0..255, then BOS=256, EOS=257, PAD=258 (vocab 259, models pad it to 272).

  Example:
    >>> tok = ByteTokenizer()
    >>> tok.decode(tok.encode("hi"))
    'hi'
  """

  bos_id, eos_id, pad_id = 256, 257, 258
  vocab_size = 259

  def encode(self, text: str, *, add_bos: bool = True) -> list[int]:
    ids = list(text.encode("utf-8"))
    return [self.bos_id, *ids] if add_bos else ids

  def decode(self, ids) -> str:
    return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")


class HFTokenizer:
  """A ``tokenizers.Tokenizer`` loaded from a local ``tokenizer.json`` (no network)."""

  def __init__(self, path: str | os.PathLike, bos_id: int | None = None, eos_id: int | None = None):
    from tokenizers import Tokenizer

    self._tok = Tokenizer.from_file(str(path))
    self.bos_id, self.eos_id = bos_id, eos_id
    self.vocab_size = self._tok.get_vocab_size()

  def encode(self, text: str, *, add_bos: bool = True) -> list[int]:
    ids = self._tok.encode(text, add_special_tokens=False).ids
    return [self.bos_id, *ids] if add_bos and self.bos_id is not None else ids

  def decode(self, ids) -> str:
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)


def load_tokenizer(folder: str | os.PathLike, bos_id: int | None = None, eos_id: int | None = None):
  """The tokenizer of a local HF folder (``tokenizer.json``), or ``None`` when it has none."""
  path = Path(folder) / "tokenizer.json"
  return HFTokenizer(path, bos_id, eos_id) if path.is_file() else None
