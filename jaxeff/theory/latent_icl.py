r"""A task where demonstrations carry information: arithmetic with a per-prompt hidden operator (GradS, ICL).

Each prompt draws an operator ``op`` from ``OPS`` (on digit pairs: keep the first or keep the second) and writes
demonstrations ``"ab>c;"`` with c = op(a, b) followed by a query ``"ab>"``; the answer digit depends on the latent
op, which only the demonstrations reveal. A demonstration is **informative** when op is the only operator
consistent with it, **ambiguous** when both give its c (a = b: it leaves the latent open). A first version
used a + b vs a - b (mod 10): a 3-layer model trained for 12,000 steps never learned to read the operator in
context (its loss stayed at ln 2 per answer, oracle = zero-shot), so the latent is now one a small model can
read (which argument the answer copies), and the selection question is unchanged. A small
jaxeff decoder is trained on prompts with 1-4 demonstrations (loss on every answer digit), so it learns to read
the operator in context.

The selection experiment (``selection_study``): per query, a pool of ``pool`` demonstrations of the query's
operator, half informative and half ambiguous ("already explained" ones, the E6 pool's learned half), shuffled;
each selector picks ``k``; accuracy of the greedy answer digit after them. Selectors: random, BM25, cosine (token
overlap: blind to the latent), GradS G1 / G2 / G3 (``GradSelector``; the gradient target is the model's own
zero-shot greedy answer, no label), and the oracle (informative first). Paired per query; bootstrap 95 %
intervals; several seeds (query streams), the queries disjoint from the training prompts (checked).

Example:
  >>> p = make_prompt(np.random.default_rng(0), n_demos=2)
  >>> p["text"].endswith(">") and len(p["demos"]) == 2
  True
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

OPS = (
  ("first", lambda a, b: a),
  ("second", lambda a, b: b),
)


def consistent_ops(a: int, b: int, c: int) -> list[int]:
  """Indices of the operators that map (a, b) to c."""
  return [i for i, (_, f) in enumerate(OPS) if f(a, b) == c]


def demo_text(a: int, b: int, op: int) -> str:
  return f"{a}{b}>{OPS[op][1](a, b)};"


def _pairs(op: int, informative: bool) -> list[tuple[int, int]]:
  out = []
  for a in range(10):
    for b in range(10):
      n = len(consistent_ops(a, b, OPS[op][1](a, b)))
      if (n == 1) == informative:
        out.append((a, b))
  return out


def query_split(a: int, b: int) -> str:
  """Query digit pairs are split 70 / 30 by (7a + 3b) mod 10: training prompts only ever ask "train" pairs,
  the selection study only "eval" pairs, so no evaluated prompt was trained on (demonstrations use every pair)."""
  return "train" if (7 * a + 3 * b) % 10 < 7 else "eval"


QUERY_PAIRS = {s: [(a, b) for a in range(10) for b in range(10) if query_split(a, b) == s] for s in ("train", "eval")}


def make_prompt(rng: np.random.Generator, n_demos: int, op: int | None = None, split: str = "train") -> dict[str, Any]:
  """One prompt: ``n_demos`` random demonstrations of ``op`` (random when None) and a query from ``split``."""
  op = int(rng.integers(len(OPS))) if op is None else op
  demos = [demo_text(int(a), int(b), op) for a, b in rng.integers(0, 10, (n_demos, 2))]
  qa, qb = QUERY_PAIRS[split][int(rng.integers(len(QUERY_PAIRS[split])))]
  return {
    "op": op,
    "demos": demos,
    "query": (qa, qb),
    "text": "".join(demos) + f"{qa}{qb}>",
    "answer": str(OPS[op][1](qa, qb)),
  }


def _encode(text: str) -> list[int]:
  return list(text.encode("ascii"))


def model_config():
  from jaxeff.config import ModelConfig

  return ModelConfig.tiny(n_layers=3, d_model=96, n_heads=4, n_kv_heads=4, head_dim=24, d_ff=256)


def train_model(
  *, steps: int = 3000, batch: int = 64, seed: int = 0, lr: float = 3e-3, progress: bool = False
) -> tuple[Any, Any, dict[str, Any]]:
  """Train ``model_config()`` on prompts of 1-4 demonstrations (loss on every answer digit: after each '>').
  Returns (config, params, {"history", "seconds", "train_queries"}); ``train_queries`` is the set of query digit
  pairs trained on (final positions), for the disjointness check."""
  from jaxeff.models.decoder import forward, init_params

  cfg = model_config()
  params = init_params(cfg, jax.random.key(seed))
  T = 4 * 5 + 3 + 1
  warm = min(100, max(1, steps // 10))
  opt = optax.adamw(
    optax.warmup_cosine_decay_schedule(0.0, lr, warm, max(steps, warm + 1), lr * 0.05), weight_decay=0.01
  )
  state = opt.init(params)

  def loss_fn(p, tok, mask):
    logits, _ = forward(p, tok, jnp.broadcast_to(jnp.arange(T), tok.shape), config=cfg)
    lp = jax.nn.log_softmax(logits[:, :-1], -1)
    nll = -jnp.take_along_axis(lp, tok[:, 1:, None], -1)[..., 0]
    return jnp.sum(nll * mask[:, 1:]) / jnp.sum(mask[:, 1:])

  @jax.jit
  def step(p, s, tok, mask):
    val, g = jax.value_and_grad(loss_fn)(p, tok, mask)
    upd, s = opt.update(g, s, p)
    return optax.apply_updates(p, upd), s, val

  rng = np.random.default_rng(10_000 + seed)
  seen: set = set()
  hist, t0 = [], time.perf_counter()
  it = range(steps)
  if progress:
    from tqdm.auto import trange

    it = trange(steps, desc="train latent-op ICL")
  for t in it:
    tok = np.full((batch, T), 32, np.int32)  # space padding (never a target)
    mask = np.zeros((batch, T), np.float32)
    for r in range(batch):
      pr = make_prompt(rng, int(rng.integers(1, 5)))
      seen.add(pr["query"])
      ids = _encode(pr["text"] + pr["answer"])
      tok[r, : len(ids)] = ids
      for j, ch in enumerate(ids[:-1]):
        if ch == ord(">"):
          mask[r, j + 1] = 1.0
    params, state, val = step(params, state, jnp.asarray(tok), jnp.asarray(mask))
    if t % 100 == 0 or t == steps - 1:
      hist.append(float(val))
  return cfg, params, {"history": hist, "seconds": time.perf_counter() - t0, "train_queries": seen}


def _bootstrap_diff(a: np.ndarray, b: np.ndarray, n: int = 4000, seed: int = 0) -> dict[str, float]:
  """Mean of a - b (paired, per query) with its bootstrap 95 % interval, in points
  (``jaxeff.evals.harness.paired_difference``)."""
  from jaxeff.evals.harness import paired_difference

  d, lo, hi = paired_difference(a, b, n_boot=n, seed=seed)
  return {"diff": 100.0 * d, "lo": 100.0 * lo, "hi": 100.0 * hi}


def selection_study(
  cfg,
  params,
  *,
  queries: int = 1000,
  pool: int = 8,
  k: int = 1,
  seeds=(0, 1, 2),
  scorers=("random", "bm25", "cosine", "G1", "G2", "G3", "oracle"),
  train_queries=None,
  progress: bool = False,
) -> dict[str, Any]:
  """The selection experiment of the module docstring. Returns per seed and pooled: accuracy per selector, the
  share of informative demonstrations each selector picked, zero-shot accuracy, paired differences (GradS G1
  minus each baseline) with bootstrap 95 % intervals, and the overlap with the training prompts (0 by design)."""
  from jaxeff.models.decoder import forward
  from jaxeff.theory.grads import GradSelector

  @jax.jit
  def greedy(tokens, last):
    logits, _ = forward(params, tokens, jnp.arange(tokens.shape[1])[None], config=cfg, logits_index=last)
    return jnp.argmax(logits[:, 0], -1)

  def answer(ids):
    return chr(int(greedy(jnp.asarray([ids], jnp.int32), jnp.asarray([len(ids) - 1]))[0]))

  sels = {s: GradSelector(cfg, params, scorer=s, pad_id=32, seed=0) for s in scorers if s != "oracle"}
  per_seed, pooled = {}, {s: [] for s in (*scorers, "zero_shot")}
  picked_inf = {s: [] for s in scorers}
  overlap = 0
  for seed in seeds:
    rng = np.random.default_rng(seed)
    acc = {s: [] for s in (*scorers, "zero_shot")}
    it = range(queries)
    if progress:
      from tqdm.auto import tqdm

      it = tqdm(it, desc=f"GradS latent-op seed {seed}")
    for _ in it:
      op = int(rng.integers(len(OPS)))
      qa, qb = QUERY_PAIRS["eval"][int(rng.integers(len(QUERY_PAIRS["eval"])))]
      inf, amb = _pairs(op, True), _pairs(op, False)
      chosen = [inf[i] for i in rng.choice(len(inf), pool // 2, replace=False)]
      chosen += [amb[i] for i in rng.choice(len(amb), pool - pool // 2, replace=False)]
      order = rng.permutation(pool)
      demos = [demo_text(*chosen[i], op) for i in order]
      is_inf = np.array([order[i] < pool // 2 for i in range(pool)])
      truth = str(OPS[op][1](qa, qb))
      q_ids = _encode(f"{qa}{qb}>")
      demo_ids = [_encode(d) for d in demos]
      if train_queries is not None:
        overlap += (qa, qb) in train_queries
      a0 = answer(q_ids)
      acc["zero_shot"].append(a0 == truth)
      for s in scorers:
        if s == "oracle":
          idx = list(np.argsort(~is_inf, kind="stable")[:k])
        else:
          idx = sels[s].select(demo_ids, q_ids, [ord(a0)], k)
        prefix = [t for i in idx for t in demo_ids[i]] + q_ids
        acc[s].append(answer(prefix) == truth)
        picked_inf[s].append(float(np.mean(is_inf[idx])))
    per_seed[str(seed)] = {s: float(np.mean(v)) for s, v in acc.items()}
    for s, v in acc.items():
      pooled[s] += v
  res: dict[str, Any] = {
    "per_seed": per_seed,
    "accuracy": {s: float(np.mean(v)) for s, v in pooled.items()},
    "informative_share": {s: float(np.mean(v)) for s, v in picked_inf.items()},
    "n": len(pooled["zero_shot"]),
    "settings": {"queries_per_seed": queries, "pool": pool, "k": k, "seeds": list(seeds), "ops": [o for o, _ in OPS]},
    "train_overlap": int(overlap),
  }
  res["paired"] = {
    f"G1 - {b}": _bootstrap_diff(np.array(pooled["G1"]), np.array(pooled[b]))
    for b in ("random", "bm25", "cosine")
    if "G1" in pooled and b in pooled
  }
  return res
