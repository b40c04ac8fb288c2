"""Quality probes for trained models: pass-key (needle) retrieval accuracy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxeff.config import ModelConfig
from jaxeff.models.decoder import forward
from jaxeff.training import data as data_lib


def needle_accuracy(
  params: Any,
  config: ModelConfig,
  lengths: Sequence[int],
  *,
  n: int = 32,
  seed: int = 0,
  digits: int = 5,
  attention: Any = None,
  batch_size: int = 4,
  return_per_digit: bool = False,
):
  """Pass-key retrieval accuracy per context length: a prompt of ``length`` byte tokens hides
  ``# The pass key is <k> s0..s4.`` (``data.passkey_example``) at a uniformly random depth in held-out stdlib
  code and ends with the question;
  an example counts as correct when every answer digit is the argmax given the correct prefix (the same
  outcome as greedy decoding of the digits). ``attention`` selects the prefill backend (e.g. ProxyAttn).

  Returns ``{length: accuracy}``; with ``return_per_digit`` also ``{length: [accuracy of digit j]}`` (a finer
  signal for comparing backends when a model retrieves only some digits reliably).
  """
  from jaxeff.attention.dense import Dense

  if config.vocab_size < data_lib.PASSKEY_VOCAB:
    raise ValueError(
      f"the needle probe uses key symbols up to id {data_lib.PASSKEY_VOCAB - 1}; this model's vocab is "
      f"{config.vocab_size} (train it with the passkey corpus, e.g. the tiny-recall preset)"
    )
  attention = attention if attention is not None else Dense()
  filler = np.concatenate(data_lib.tokenize_corpus("python", "validation", _byte_tok()))

  @jax.jit
  def predict(p, rows):
    B, T = rows.shape
    pos = jnp.broadcast_to(jnp.arange(T), (B, T))
    logits, _ = forward(p, rows, pos, config=config, attention=attention)
    return jnp.argmax(logits, axis=-1)

  out, per_digit = {}, {}
  for L in lengths:
    rng = np.random.default_rng([seed, L, 99])
    hits = []
    for start in range(0, n, batch_size):
      exs = [data_lib.passkey_example(filler, L, rng, digits=digits) for _ in range(min(batch_size, n - start))]
      rows = np.stack([e[0][:-1] for e in exs])
      pred = np.asarray(predict(params, rows))
      for (row, _, ans_at), pr in zip(exs, pred):
        # digits only (the trailing '.' is not part of the key)
        hits.append(row[ans_at : ans_at + digits] == pr[ans_at - 1 : ans_at - 1 + digits])
    hits = np.asarray(hits)
    out[int(L)] = float(hits.all(1).mean())
    per_digit[int(L)] = hits.mean(0).round(4).tolist()
  if return_per_digit:
    return out, per_digit
  return out


def _byte_tok():
  from jaxeff.tokenizer import ByteTokenizer

  return ByteTokenizer()
