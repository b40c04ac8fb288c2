"""Judge Q (arXiv 2509.10798): trained soft tokens whose queries score the KV cache for eviction.

``n`` soft-token embeddings (``soft_emb [n, d]``, the only trained leaf; the model is frozen) are appended after
the prompt. Training aligns their attention over the prompt with the attention the model's own response
pays to it:

  A_soft[l, h, j] = mean_{s in soft}  softmax(q_s K^T / sqrt(d))_j      (pass 1: prompt + soft tokens)
  A_resp[l, h, j] = mean_{t in resp}  softmax(q_t K^T / sqrt(d))_j      (pass 2: prompt + greedy response)
  loss = mean_{l, h} (1/T) ||A_soft[l, h] - A_resp[l, h]||^2             (``loss='mse'``, the note's form)

over the prompt keys j (probabilities of the real softmax over every visible key, restricted to the prompt).
UNVERIFIED choices, as options: ``loss='kl'`` (KL(A_resp || A_soft) after renormalising over the prompt),
``head_average=True`` (align the head-averaged maps), ``layers`` (a subset), ``target_pool='max'`` (the response
target pooled by a per-key max over the response tokens instead of the mean). The response branch is a constant
(computed once, ``stop_gradient`` in effect).

Training (``train_judgeq``, the attention probe, the data) lives in ``jaxeff.training.judgeq``; this module is the
inference side. At inference (``JudgeQPress``) the soft tokens are prefilled after the prompt (positions continue from it);
per layer and kv head score_j = pool_k(mean_{s, h in group} softmax(q_s K_h^T / sqrt(d))_j); the top
``budget`` prompt entries (plus the protected recent window) stay; the soft tokens' own KV is never written;
decoding continues at the prompt length.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxeff._deprecation import moved
from jaxeff.kvcache.eviction import Press, pool_keys, query_key_probs

Array = jax.Array


class SoftTokens:
  """Hashable holder of the soft-token embeddings [n, d] (a press is a static, hashable jit argument)."""

  def __init__(self, emb):
    self.emb = np.asarray(emb, np.float32)
    if self.emb.ndim != 2 or self.emb.shape[0] < 1:
      raise ValueError(f"soft tokens must be [n >= 1, d], got shape {self.emb.shape}")
    self._hash = hash((self.emb.shape, self.emb.tobytes()))

  def __hash__(self):
    return self._hash

  def __eq__(self, other):
    return isinstance(other, SoftTokens) and self._hash == other._hash and np.array_equal(self.emb, other.emb)

  def __len__(self):
    return self.emb.shape[0]

  def save(self, path: str | Path, **meta) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / "soft_emb.npy.tmp"
    with open(tmp, "wb") as f:
      np.save(f, self.emb)
    tmp.replace(path / "soft_emb.npy")
    (path / "judgeq.json").write_text(json.dumps({"n_soft": len(self), "d": int(self.emb.shape[1]), **meta}, indent=2))
    return path

  @classmethod
  def load(cls, path: str | Path) -> SoftTokens:
    f = Path(path) / "soft_emb.npy"
    if not f.exists():
      raise FileNotFoundError(f"no soft_emb.npy in {path} (train one with `jaxeff judgeq train`)")
    try:
      return cls(np.load(f))
    except ValueError as e:
      raise ValueError(f"corrupt soft-token file {f}: {e}") from e


def extend_prompt(params, tokens_bt, positions_bt, soft_bnd):
  """Append the soft tokens after each row's prompt: the embedding table gains rows V..V+n-1 (ids of the soft
  tokens) and the soft tokens take positions max(prompt position) + 1 ... (right-padded rows included)."""
  n = soft_bnd.shape[0]
  V = params["embed"].shape[0]
  B = tokens_bt.shape[0]
  p = dict(params)
  p["embed"] = jnp.concatenate([params["embed"], jnp.asarray(soft_bnd, params["embed"].dtype)], axis=0)
  toks = jnp.concatenate([tokens_bt, jnp.broadcast_to(V + jnp.arange(n, dtype=tokens_bt.dtype), (B, n))], axis=1)
  start = jnp.max(positions_bt, axis=1, keepdims=True) + 1
  pos = jnp.concatenate([positions_bt, (start + jnp.arange(n)).astype(positions_bt.dtype)], axis=1)
  return p, toks, pos


@dataclasses.dataclass(frozen=True)
class JudgeQPress(Press):
  """Eviction by Judge Q's soft-token queries: ``Sampler(..., cache=JudgeQPress(SoftTokens.load(d), budget=0.1))``.

  Same budget / window / pooling options as ``Press`` (kernel_size 7, max pooling, window 8 by default).
  """

  soft: SoftTokens | None = None
  scorer: str = "judgeq"

  def __post_init__(self):
    super().__post_init__()
    if not isinstance(self.soft, SoftTokens):
      raise ValueError("JudgeQPress needs trained soft tokens: JudgeQPress(SoftTokens.load(path), ...)")

  def __init__(self, soft: SoftTokens | None = None, **kw):  # soft tokens first, as the docs call it
    kw.setdefault("scorer", "judgeq")
    object.__setattr__(self, "soft", soft)
    for f in dataclasses.fields(Press):
      object.__setattr__(self, f.name, kw.pop(f.name, f.default))
    if kw:
      raise TypeError(f"unknown JudgeQPress options: {sorted(kw)}")
    self.__post_init__()

  @property
  def _keeps_all(self) -> bool:
    return isinstance(self.budget, float) and self.budget == 1.0

  @property
  def n_extra_tokens(self) -> int:
    return 0 if self._keeps_all else len(self.soft)

  def extend_prompt(self, params, tokens_bt, positions_bt):
    """Append the soft tokens to the prefill; at full budget (1.0: nothing is evicted, nothing to score) the
    prefill is left as it is, so Judge Q at identity adds no tokens (and no attention-pattern change for a sparse
    prefill backend such as ProxyAttn)."""
    if self._keeps_all:
      return params, tokens_bt, positions_bt
    return extend_prompt(params, tokens_bt, positions_bt, self.soft.emb)

  def scores(self, layer, q_btnh, k_btkh, positions_bt, lengths_b, T):
    n = len(self.soft)
    # the real softmax over every visible key (prompt and earlier soft tokens), restricted to the prompt: the
    # same maps the soft tokens were trained on
    p = query_key_probs(q_btnh[:, T : T + n], positions_bt[:, T : T + n], k_btkh, positions_bt)
    s = p[..., :T].mean((2, 3))  # [B, K, T]
    s = pool_keys(jnp.where((positions_bt[:, :T] >= 0)[:, None], s, 0.0), self.kernel_size, self.pooling)
    if not self.per_head:
      s = jnp.broadcast_to(s.mean(1, keepdims=True), s.shape)
    return s


def init_soft(params, n: int, seed: int = 0) -> np.ndarray:
  """Soft tokens initialised to the embeddings of n random vocabulary tokens."""
  emb = np.asarray(params["embed"], np.float32)
  return emb[np.random.default_rng(seed).integers(0, emb.shape[0], n)].copy()


_MOVED = (
  "AttentionProbe",
  "attention_maps",
  "alignment_loss",
  "JudgeQConfig",
  "response_maps",
  "train_judgeq",
  "make_training_data",
)


# Deprecated aliases (one release): Judge Q's training moved to ``jaxeff.training.judgeq`` (a cache module no
# longer depends on the trainer).
__getattr__ = moved(__name__, {n: "jaxeff.training.judgeq" for n in _MOVED})
