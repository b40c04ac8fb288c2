"""Judge Q's soft-token training (arXiv 2509.10798): the attention probe, the alignment loss, self-generated data
and the training loop. The press that uses the trained tokens is ``jaxeff.kvcache.judgeq.JudgeQPress``; the
objective and its UNVERIFIED options are in that module's docstring:

  A_soft[l, h, j] = mean_{s in soft}  softmax(q_s K^T / sqrt(d))_j      (pass 1: prompt + soft tokens)
  A_resp[l, h, j] = mean_{t in resp}  softmax(q_t K^T / sqrt(d))_j      (pass 2: prompt + greedy response)
  loss = mean_{l, h} (1/T) ||A_soft[l, h] - A_resp[l, h]||^2
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxeff.config import ModelConfig
from jaxeff.kvcache.eviction import query_key_probs
from jaxeff.kvcache.judgeq import SoftTokens, extend_prompt, init_soft
from jaxeff.models.decoder import forward

Array = jax.Array


# ------------------------------------------------------------------------------------------------ probe
@flax.struct.dataclass
class AttentionProbe:
  """A cache stand-in that records, per layer, the mean attention [B, N, P] of the query rows [a, b) of the
  prefill chunk over its first ``prompt`` keys (the real softmax over every visible key, restricted): under the
  layer's sliding window (``windows``, per layer; Gemma 3's local layers) and the model's attention-logit cap."""

  maps: tuple[Any, ...]
  rows: tuple[int, int] = flax.struct.field(pytree_node=False)
  prompt: int = flax.struct.field(pytree_node=False)
  pool: str = flax.struct.field(pytree_node=False, default="mean")
  windows: tuple[int | None, ...] = flax.struct.field(pytree_node=False, default=())
  softcap: float | None = flax.struct.field(pytree_node=False, default=None)
  supports_softcap = True  # its probabilities apply the cap (``softcap``)

  @classmethod
  def create(
    cls, n_layers: int, rows: tuple[int, int], prompt: int, pool: str = "mean", config: ModelConfig | None = None
  ) -> AttentionProbe:
    if pool not in ("mean", "max"):
      raise ValueError(f"pool must be 'mean' or 'max', got {pool!r}")
    windows = tuple(config.layer_window(i) for i in range(n_layers)) if config is not None else ()
    cap = config.attn_logit_softcap if config is not None else None
    return cls(maps=(None,) * n_layers, rows=rows, prompt=prompt, pool=pool, windows=windows, softcap=cap)

  def prefill(self, layer, k_btkh, v_btkh, positions_bt, *, q=None, **_):
    a, b = self.rows
    window = self.windows[layer] if self.windows else None
    # [B, K, G, W, S]
    p = query_key_probs(q[:, a:b], positions_bt[:, a:b], k_btkh, positions_bt, window=window, softcap=self.softcap)
    m = p[..., : self.prompt].mean(3) if self.pool == "mean" else p[..., : self.prompt].max(3)
    B, K, G, P = m.shape
    maps = list(self.maps)
    maps[layer] = m.reshape(B, K * G, P)
    return self.replace(maps=tuple(maps))


def attention_maps(params, config: ModelConfig, tokens_bt, rows: tuple[int, int], prompt: int, pool="mean") -> Array:
  """[L, B, N, prompt]: attention of rows [a, b) over the first ``prompt`` keys, per layer and head, pooled over
  the rows by ``pool`` ('mean', or 'max' per key)."""
  B, T = tokens_bt.shape
  pos = jnp.broadcast_to(jnp.arange(T), (B, T))
  probe = AttentionProbe.create(config.n_layers, rows, prompt, pool, config=config)
  _, probe = forward(
    params, tokens_bt, pos, probe, config=config, is_prefill=True, logits_index=jnp.zeros((B,), jnp.int32)
  )
  return jnp.stack(probe.maps)


def alignment_loss(a_soft, a_resp, *, loss: str = "mse", head_average: bool = False, layers=None):
  """Judge Q's loss between [L, B, N, P] attention maps (module docstring)."""
  if layers is not None:
    idx = jnp.asarray(layers)
    a_soft, a_resp = a_soft[idx], a_resp[idx]
  if head_average:
    a_soft, a_resp = a_soft.mean(2, keepdims=True), a_resp.mean(2, keepdims=True)
  if loss == "mse":
    return jnp.mean((a_soft - a_resp) ** 2)
  if loss == "kl":
    ps = a_soft / jnp.sum(a_soft, -1, keepdims=True)
    pr = a_resp / jnp.sum(a_resp, -1, keepdims=True)
    return jnp.mean(jnp.sum(pr * (jnp.log(pr + 1e-12) - jnp.log(ps + 1e-12)), -1))
  raise ValueError(f"loss must be 'mse' or 'kl', got {loss!r}")


# ------------------------------------------------------------------------------------------------ training
@dataclasses.dataclass(frozen=True)
class JudgeQConfig:
  """Judge Q training options (defaults: 32 soft tokens, MSE per head over all layers, Adam lr 1e-2)."""

  n_soft: int = 32
  steps: int = 200
  batch_size: int = 8
  lr: float = 1e-2
  loss: str = "mse"
  head_average: bool = False
  layers: tuple[int, ...] | None = None
  target_pool: str = "mean"
  seed: int = 0

  def __post_init__(self):
    if self.target_pool not in ("mean", "max"):
      raise ValueError(f"target_pool must be 'mean' or 'max', got {self.target_pool!r}")
    if self.n_soft < 1 or self.steps < 1 or self.batch_size < 1 or self.lr <= 0:
      raise ValueError("n_soft, steps, batch_size must be >= 1 and lr > 0")
    if self.loss not in ("mse", "kl"):
      raise ValueError(f"loss must be 'mse' or 'kl', got {self.loss!r}")


def response_maps(params, config: ModelConfig, prompts, responses, batch_size: int = 8, pool="mean") -> np.ndarray:
  """A_resp for every example: [E, L, N, P] (the response tokens' attention over the prompt, pooled over the
  response by ``pool``: 'mean' (default) or 'max' per key, an UNVERIFIED alternative)."""
  P, M = prompts.shape[1], responses.shape[1]
  fn = jax.jit(lambda p, t: attention_maps(p, config, t, (P, P + M), P, pool))
  out = []
  for a in range(0, len(prompts), batch_size):
    toks = np.concatenate([prompts[a : a + batch_size], responses[a : a + batch_size]], 1).astype(np.int32)
    out.append(np.asarray(fn(params, toks)).transpose(1, 0, 2, 3))
  return np.concatenate(out)


def train_judgeq(
  params, config: ModelConfig, prompts, responses, jc: JudgeQConfig = JudgeQConfig(), progress=True, init=None
):
  """Train the soft tokens on (prompt [E, P], response [E, M]) pairs; returns (SoftTokens, loss history).

  ``init``: soft tokens ([n_soft, d] array or ``SoftTokens``) to continue from instead of the initialisation
  (``init_soft``); the optimizer state starts fresh (a warm restart).

  Only ``soft_emb`` is trained (the trainer's ``make_optimizer`` with ``trainable='^soft_emb$'``: frozen leaves
  get zero updates and are returned untouched).
  """
  from jaxeff.training.optim import OptimizerConfig, make_optimizer, trainable_mask

  prompts, responses = np.asarray(prompts, np.int32), np.asarray(responses, np.int32)
  if prompts.ndim != 2 or responses.ndim != 2 or len(prompts) != len(responses):
    raise ValueError(f"prompts [E, P] and responses [E, M] must pair up, got {prompts.shape} and {responses.shape}")
  E, P = prompts.shape
  n = jc.n_soft
  a_resp_all = response_maps(params, config, prompts, responses, jc.batch_size, jc.target_pool)
  if init is None:
    start = init_soft(params, n, jc.seed)
  else:
    start = np.asarray(init.emb if isinstance(init, SoftTokens) else init, np.float32)
    d = int(params["embed"].shape[1])
    if start.shape != (n, d):
      raise ValueError(f"init soft tokens must be [n_soft={n}, d={d}], got {start.shape}")
  tree = {"model": params, "soft_emb": jnp.asarray(start)}
  tc = OptimizerConfig(
    lr=jc.lr,
    warmup_steps=0,
    schedule="constant",
    weight_decay=0.0,
    clip_norm=1.0,
    steps=jc.steps,
    trainable="^soft_emb$",
  )
  opt = make_optimizer(tc, tree)
  trainable = trainable_mask(tree, tc.trainable)

  def loss_fn(t, toks, a_resp):
    model = jax.lax.stop_gradient(t["model"])
    p, tk, _ = extend_prompt(model, toks, jnp.broadcast_to(jnp.arange(P), toks.shape), t["soft_emb"])
    a_soft = attention_maps(p, config, tk, (P, P + n), P)  # [L, B, N, P]
    return alignment_loss(
      a_soft, a_resp.transpose(1, 0, 2, 3), loss=jc.loss, head_average=jc.head_average, layers=jc.layers
    )

  @jax.jit
  def step(t, o, toks, a_resp):
    loss, g = jax.value_and_grad(loss_fn)(t, toks, a_resp)
    upd, o = opt.update(g, o, t)
    new = optax.apply_updates(t, upd)
    new = jax.tree.map(lambda tr, old, nw: nw if tr else old, trainable, t, new)
    return new, o, loss

  ostate = opt.init(tree)
  rng = np.random.default_rng(jc.seed)
  hist = []
  it = range(jc.steps)
  if progress:
    from tqdm.auto import tqdm

    it = tqdm(it, desc="judgeq", unit="step")
  for _ in it:
    idx = rng.choice(E, size=min(jc.batch_size, E), replace=False)
    tree, ostate, loss = step(tree, ostate, jnp.asarray(prompts[idx]), jnp.asarray(a_resp_all[idx]))
    hist.append(float(loss))
    if progress:
      it.set_postfix(loss=f"{hist[-1]:.3g}")
  return SoftTokens(np.asarray(tree["soft_emb"])), hist, tree


def make_training_data(
  params,
  config: ModelConfig,
  *,
  n_examples=64,
  prompt_len=512,
  response_len=5,
  seed=0,
  passkey_share=0.5,
  split="train",
  tokenizer=None,
):
  """Self-generated Judge Q data from the machine's corpora: prompts are pass-key rows cut right after the
  question (``passkey_share`` of them) and windows of stdlib code; responses are the model's own greedy
  continuations (``response_len`` tokens, batched through the sampler).

  ``tokenizer``: the model's own (e.g. ``load_model(...)[2]``); the code windows are then cut from its token
  stream. The pass-key rows use jaxeff's byte-level needle template, so a model with another tokenizer gets code
  windows only (``passkey_share`` is ignored for it). ``None``: jaxeff's byte tokenizer (the tiny models)."""
  from jaxeff.generation import Sampler, SamplingParams
  from jaxeff.tokenizer import ByteTokenizer
  from jaxeff.training import data as data_lib

  byte_level = tokenizer is None or isinstance(tokenizer, ByteTokenizer)
  tok = ByteTokenizer() if byte_level else tokenizer
  filler = np.concatenate(data_lib.tokenize_corpus("python", split, tok))
  if len(filler) <= prompt_len:
    raise ValueError(f"the corpus gives {len(filler)} tokens, fewer than prompt_len {prompt_len}")
  rng = np.random.default_rng([seed, 7])
  prompts = []
  passkey_ok = byte_level and config.vocab_size >= data_lib.PASSKEY_VOCAB
  n_key = int(round(n_examples * passkey_share)) if passkey_ok else 0
  if n_key and prompt_len < 80:
    raise ValueError(f"pass-key prompts need prompt_len >= 80 (needle, filler and question), got {prompt_len}")
  for _ in range(n_key):
    row, _, ans_at = data_lib.passkey_example(filler, prompt_len + 5, rng)
    prompts.append(row[ans_at - prompt_len : ans_at])
  for _ in range(n_examples - n_key):
    s = int(rng.integers(0, len(filler) - prompt_len))
    prompts.append(filler[s : s + prompt_len])
  prompts = np.stack(prompts).astype(np.int32)
  sampler = Sampler(config, params)
  res = sampler.generate(
    prompts.tolist(), SamplingParams(max_new_tokens=response_len, temperature=0.0), jax.random.key(seed)
  )
  return prompts, res.tokens[:, 0, :].astype(np.int32)
