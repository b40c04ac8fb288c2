"""Tokenizers: a built-in byte-level tokenizer and a wrapper over a HF folder's ``tokenizer.json``.

``load_tokenizer(folder)`` follows the folder the way transformers' ``AutoTokenizer`` does: special tokens (BOS)
are added by ``tokenizer.json``'s post-processor (a Llama-style folder has one that prepends BOS, a Qwen-style
one adds nothing; transformers' generic fast tokenizer ignores ``add_bos_token`` too, and jaxeff's GGUF
converter writes the post-processor the flag asks for). A chat template (``chat_template`` in
``tokenizer_config.json`` or ``chat_template.jinja``) is rendered by ``apply_chat_template`` with the Jinja
environment transformers uses. jaxeff's own tokenizers (``training.data.save_tokenizer_files``, the embedded
models) carry a post-processor that prepends ``<bos>``, as their models were trained.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from jaxeff.io import read_text


class ByteTokenizer:
  """UTF-8 bytes as ids 0..255, then BOS=256, EOS=257, PAD=258 (vocab 259, models pad it to 272).

  Example:
    >>> tok = ByteTokenizer()
    >>> tok.decode(tok.encode("hi"))
    'hi'
  """

  bos_id, eos_id, pad_id = 256, 257, 258
  vocab_size = 259
  chat_template = None

  def encode(self, text: str, *, add_bos: bool | None = None) -> list[int]:
    ids = list(text.encode("utf-8"))
    return [self.bos_id, *ids] if add_bos is not False else ids

  def decode(self, ids) -> str:
    return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")


class HFTokenizer:
  """A ``tokenizers.Tokenizer`` loaded from a local ``tokenizer.json`` (no network).

  Args:
    path: the ``tokenizer.json`` file.
    bos_id, eos_id: special ids (default: read from ``tokenizer_config.json`` beside the file).
    add_bos: whether ``encode`` adds BOS by default. ``None``: whatever the file's post-processor adds
      (transformers' behaviour); ``True`` / ``False`` override it.
    chat_template: a Jinja chat template (default: from ``tokenizer_config.json`` / ``chat_template.jinja``).

  Example:
    >>> tok = load_tokenizer("runs/smollm2-135m-instruct")  # doctest: +SKIP
    >>> tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True)  # doctest: +SKIP
  """

  def __init__(
    self,
    path: str | os.PathLike,
    bos_id: int | None = None,
    eos_id: int | None = None,
    *,
    add_bos: bool | None = None,
    chat_template: str | None = None,
  ):
    from tokenizers import Tokenizer

    path = Path(path)
    try:
      self._tok = Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust library raises a bare Exception for a file it cannot parse
      raise ValueError(f"corrupt {path}: {e}") from None
    cfg: dict[str, Any] = {}
    cfg_file = path.parent / "tokenizer_config.json"
    if cfg_file.is_file():
      try:
        cfg = json.loads(read_text(cfg_file))
      except ValueError as e:
        raise ValueError(f"corrupt {cfg_file}: {e}") from None
      if not isinstance(cfg, dict):
        raise ValueError(f"corrupt {cfg_file}: expected a JSON object, got {type(cfg).__name__}")
    tok_id = lambda name: self._tok.token_to_id(name) if isinstance(name, str) else None
    self.bos_id = bos_id if bos_id is not None else tok_id(_token(cfg.get("bos_token")))
    self.eos_id = eos_id if eos_id is not None else tok_id(_token(cfg.get("eos_token")))
    self.vocab_size = self._tok.get_vocab_size()
    self.add_bos = add_bos  # None: the post-processor decides, as in transformers' generic fast tokenizer
    jinja = path.parent / "chat_template.jinja"
    self.chat_template = chat_template or cfg.get("chat_template") or (jinja.read_text() if jinja.is_file() else None)
    self._special = {k: _token(cfg.get(k)) for k in ("bos_token", "eos_token", "unk_token", "pad_token")}

  def encode(self, text: str, *, add_bos: bool | None = None) -> list[int]:
    """Token ids of ``text``; ``add_bos`` overrides the folder's default (see the class docstring)."""
    add = self.add_bos if add_bos is None else add_bos
    if add is None:  # the folder's post-processor adds what transformers would add
      return self._tok.encode(text, add_special_tokens=True).ids
    ids = self._tok.encode(text, add_special_tokens=False).ids
    return [self.bos_id, *ids] if add and self.bos_id is not None else ids

  def decode(self, ids, *, skip_special_tokens: bool = True) -> str:
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

  def token_to_id(self, token: str) -> int | None:
    return self._tok.token_to_id(token)

  def render_chat(self, messages: list[dict[str, str]], *, add_generation_prompt: bool = True, **kwargs) -> str:
    """The chat template rendered to text (transformers' sandboxed Jinja environment, trim/lstrip blocks)."""
    if not self.chat_template:
      raise ValueError("this tokenizer has no chat template (tokenizer_config.json has no 'chat_template')")
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
      raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda x, indent=None, ensure_ascii=False: json.dumps(
      x, indent=indent, ensure_ascii=ensure_ascii
    )
    env.globals["raise_exception"] = raise_exception
    return env.from_string(self.chat_template).render(
      messages=messages, add_generation_prompt=add_generation_prompt, **self._special, **kwargs
    )

  def apply_chat_template(self, messages: list[dict[str, str]], *, add_generation_prompt: bool = True, **kwargs):
    """Token ids of the rendered chat (no BOS added beyond what the template writes, as transformers does)."""
    return self.encode(
      self.render_chat(messages, add_generation_prompt=add_generation_prompt, **kwargs), add_bos=False
    )


def _token(value: Any) -> str | None:
  if isinstance(value, dict):  # transformers' serialised AddedToken
    return value.get("content")
  return value if isinstance(value, str) else None


def load_tokenizer(folder: str | os.PathLike, bos_id: int | None = None, eos_id: int | None = None, *, config=None):
  """The tokenizer of a local HF folder (``tokenizer.json``), or ``None`` when it has none.

  ``bos_id`` / ``eos_id`` override the folder's; ``config`` (a ``ModelConfig``) supplies them where the folder's
  ``tokenizer_config.json`` names none.
  """
  path = Path(folder) / "tokenizer.json"
  if not path.is_file():
    return None
  if config is not None:
    cfg_file = Path(folder) / "tokenizer_config.json"
    try:
      named = json.loads(read_text(cfg_file)) if cfg_file.is_file() else {}
    except ValueError as e:
      raise ValueError(f"corrupt {cfg_file}: {e}") from None
    named = named if isinstance(named, dict) else {}
    if bos_id is None and _token(named.get("bos_token")) is None:
      bos_id = config.bos_token_id
    if eos_id is None and _token(named.get("eos_token")) is None:
      eos_id = config.stop_token_ids[0] if config.stop_token_ids else None
  return HFTokenizer(path, bos_id, eos_id)
