r"""Two-stage fine-tuning for code translation (SA then PA, or PA then SA) on jaxeff's trainer, and generation.

Examples share one template for snippet (SA) and program (PA) pairs:
``"Translate the following {src_lang} code to {tgt_lang}:\n{src}\n### {tgt_lang}\n"`` -> target + EOS; the loss
covers the target tokens (and EOS) only. ``build_examples`` writes rows + loss masks as an ``npz`` corpus the
trainer reads (``corpora=("npz:PATH",)``); each row holds whole examples (packed). An example longer than a row
is refused (``truncate=False``, default: a truncated target teaches the model to stop mid-program) or, with
``truncate=True``, cut on its target side and counted. ``assert_disjoint`` / ``disjoint_from`` keep held-out
pairs out of training (by normalised source and target text).

``TwoStage(order=("sa", "pa"), stage_steps, lrs, replay)``: stage 1 trains on the first data set, stage 2 starts
from stage 1's exported weights (a checkpoint at the boundary; each stage resumes exactly from its own
checkpoints) and trains on the second, mixed with ``replay`` of the first. The stage order is UNVERIFIED (the paper's
abstract does not give it), so both orders are options and neither is called the paper's.

Generation: ``SamplerTranslator`` translates with any jaxeff model through the batched sampler (n samples per
prompt sharing one prefill) and extracts the function from the output (up to the first blank line that follows
a complete function / balanced braces); it has the ``Generator`` signature the evaluator takes, so external models
plug in the same way.

Example:
  >>> ids, mask = example_tokens("def f(): pass", "int f() {}", "python", "cpp")
  >>> int(mask.sum()) == len("int f() {}") + 1
  True
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxeff.tokenizer import ByteTokenizer

TEMPLATE = "Translate the following {src_lang} code to {tgt_lang}:\n{src}\n### {tgt_lang}\n"
LANG_NAMES = {"cpp": "C++", "java": "Java", "python": "Python"}


def example_tokens(src: str, tgt: str, src_lang: str, tgt_lang: str, *, template: str = TEMPLATE, tokenizer=None):
  """(ids, loss mask over next-token targets) for one pair: the mask is 1 on the target and EOS."""
  tok = tokenizer or ByteTokenizer()
  prompt = tok.encode(
    template.format(src_lang=LANG_NAMES.get(src_lang, src_lang), tgt_lang=LANG_NAMES.get(tgt_lang, tgt_lang), src=src)
  )
  return target_masked(prompt, tok.encode(tgt, add_bos=False) + [tok.eos_id])


def target_masked(prompt: Sequence[int], target: Sequence[int]):
  """(ids, loss mask over next-token targets) for ``prompt + target``: the mask is 1 where the next token is
  one of ``target``'s."""
  ids = np.array(list(prompt) + list(target), np.int32)
  mask = np.zeros(len(ids) - 1, np.float32)
  mask[len(prompt) - 1 :] = 1.0
  return ids, mask


def build_examples(
  pairs: Sequence[dict[str, str]],
  path: str | os.PathLike,
  *,
  seq_len: int = 512,
  template: str = TEMPLATE,
  tokenizer=None,
  truncate: bool = False,
  example=None,
) -> dict[str, Any]:
  """Pack pairs ({"src", "tgt", "src_lang", "tgt_lang"}) into rows [n, seq_len + 1] with target-only loss masks
  and save them as an npz corpus; returns counts (rows, examples, truncated). Raises ``ValueError`` (before
  writing) when an example does not fit a row, unless ``truncate``. ``example`` (``(tokenizer, src, tgt,
  src_lang, tgt_lang) -> (ids, mask)``, e.g. ``study.chat_example``) replaces the plain template."""
  from jaxeff.training.data import save_rows

  tok = tokenizer or ByteTokenizer()
  if example is None:
    examples = [
      example_tokens(p["src"], p["tgt"], p["src_lang"], p["tgt_lang"], template=template, tokenizer=tok) for p in pairs
    ]
  else:
    examples = [example(tok, p["src"], p["tgt"], p["src_lang"], p["tgt_lang"]) for p in pairs]
  if not truncate:
    over = [len(ids) for ids, _ in examples if len(ids) > seq_len + 1]
    if over:
      raise ValueError(
        f"{len(over)} of {len(pairs)} examples are longer than a row of {seq_len + 1} tokens (longest {max(over)}): "
        "raise seq_len, or pass truncate=True to cut their targets (they then teach stopping mid-program)"
      )
  rows, masks = [], []
  pad = next((i for i in (getattr(tok, "pad_id", None), tok.eos_id) if i is not None), 0)  # masked out: any id
  row = np.full(seq_len + 1, pad, np.int32)
  m = np.zeros(seq_len, np.float32)
  at, truncated = 0, 0
  for ids, mk in examples:
    if len(ids) > seq_len + 1:
      ids, mk = ids[: seq_len + 1], mk[:seq_len]
      truncated += 1
      if mk.sum() == 0:
        continue  # the prompt alone fills the row: nothing to learn
    if at + len(ids) > seq_len + 1:
      rows.append(row)
      masks.append(m)
      row = np.full(seq_len + 1, pad, np.int32)
      m = np.zeros(seq_len, np.float32)
      at = 0
    row[at : at + len(ids)] = ids
    m[at : at + len(ids) - 1] = mk
    at += len(ids)
  if at:
    rows.append(row)
    masks.append(m)
  if not rows:
    raise ValueError("no examples to write")
  save_rows(path, np.stack(rows), np.stack(masks))
  return {"rows": len(rows), "examples": len(pairs), "truncated": truncated, "path": str(path)}


def _norm(code: str) -> str:
  return " ".join(code.split())


def disjoint_from(test: Sequence[dict], *train_sets: Sequence[dict]) -> tuple[list[dict], int]:
  """``test`` without the pairs whose source or target (whitespace-normalised) occurs in any training set; returns
  (kept pairs, number dropped)."""
  seen = {_norm(p[k]) for t in train_sets for p in t for k in ("src", "tgt")}
  kept = [p for p in test if _norm(p["src"]) not in seen and _norm(p["tgt"]) not in seen]
  return kept, len(test) - len(kept)


def assert_disjoint(test: Sequence[dict], *train_sets: Sequence[dict]) -> None:
  """Raise ``ValueError`` naming how many held-out pairs also occur in training (by normalised text)."""
  _, dropped = disjoint_from(test, *train_sets)
  if dropped:
    raise ValueError(f"{dropped} of {len(test)} held-out pairs occur in the training data (use disjoint_from)")


@dataclasses.dataclass(frozen=True)
class TwoStage:
  """The schedule: ``order`` of the data sets ("sa", "pa"), steps and peak lr per stage, ``replay`` share of the
  first stage's data mixed into the second (0 = none)."""

  order: tuple[str, str] = ("sa", "pa")
  stage_steps: tuple[int, int] = (200, 200)
  lrs: tuple[float, float] = (1e-3, 1e-3)
  replay: float = 0.0

  def __post_init__(self):
    if sorted(self.order) != ["pa", "sa"]:
      raise ValueError(f"order must be ('sa', 'pa') or ('pa', 'sa'), got {self.order}")
    if any(s < 1 for s in self.stage_steps) or any(lr <= 0 for lr in self.lrs):
      raise ValueError("stage steps must be >= 1 and learning rates > 0")
    if not 0.0 <= self.replay < 1.0:
      raise ValueError(f"replay must be in [0, 1), got {self.replay}")


def run_stages(stages, base, workdir: str | os.PathLike, *, progress: bool = True) -> list[Any]:
  """Train ``stages`` one after another with the trainer: each is ``(corpora, weights, steps, lr)`` (``lr`` None:
  ``base.lr``); stage k runs in ``workdir/stage{k}`` (resumable) from the previous stage's exported weights
  (the first from ``base.init_from``). Returns the stages' ``TrainResult``s."""
  from jaxeff.training.trainer import train_and_evaluate

  results, prev = [], base.init_from
  for k, (corpora, weights, steps, lr) in enumerate(stages):
    cfg = dataclasses.replace(
      base,
      corpora=tuple(corpora),
      weights=tuple(weights),
      steps=steps,
      lr=base.lr if lr is None else lr,
      warmup_steps=min(base.warmup_steps, max(1, steps // 10)),
      init_from=None if prev is None else str(prev),
    )
    res = train_and_evaluate(cfg, Path(workdir) / f"stage{k}", progress=progress)
    results.append(res)
    prev = res.export_dir
  return results


def train_two_stage(
  data: dict[str, str | os.PathLike], base, schedule: TwoStage, workdir: str | os.PathLike, *, progress: bool = True
) -> list[Any]:
  """Run the two stages with the trainer: ``data`` maps "sa" / "pa" to npz corpora; ``base`` is a TrainConfig
  (model, seq_len, batch...). Stage k trains in ``workdir/stage{k}`` (resumable) and exports its weights, which
  stage 2 starts from. Returns the two ``TrainResult``s."""
  stages = []
  for k, (name, steps, lr) in enumerate(zip(schedule.order, schedule.stage_steps, schedule.lrs)):
    corpora, weights = (f"npz:{data[name]}",), (1.0,)
    if k == 1 and schedule.replay > 0:
      first = schedule.order[0]
      corpora = (f"npz:{data[name]}", f"npz:{data[first]}")
      weights = (1.0 - schedule.replay, schedule.replay)
    stages.append((corpora, weights, steps, lr))
  return run_stages(stages, base, workdir, progress=progress)


def template_pairs(n: int, seed: int) -> tuple[list[dict], list[dict]]:
  """``(sa, pa)``: ``n`` Python->C++ function pairs (PA: loops, conditionals, digit sums from templates with random
  constants; never TransCoder-test stems) and their aligned statement snippet pairs (SA), as example dicts
  (``src``, ``tgt``, ``src_lang``, ``tgt_lang``) for ``build_examples``.

  Example:
    >>> sa, pa = template_pairs(2, seed=0)
    >>> len(pa), pa[0]["tgt_lang"], len(sa) >= 6
    (2, 'cpp', True)
  """
  import random

  rng = random.Random(seed)
  pa, sa = [], []
  for _ in range(n):
    a, b, c = rng.randint(2, 9), rng.randint(1, 20), rng.randint(2, 5)
    kind = rng.randrange(3)
    if kind == 0:
      py = ["def f(n):", f"    s = {b}", "    for i in range(n):", f"        s += i * {a}", f"    return s % {c}"]
      cc = [
        "int f(int n) {",
        f"  int s = {b};",
        "  for (int i = 0; i < n; i++) {",
        f"    s += i * {a};",
        "  }",
        f"  return s % {c};",
        "}",
      ]
      snippets = [
        (py[1].strip(), cc[1].strip()),
        (py[2].strip(), cc[2].strip()),
        (py[3].strip(), cc[3].strip()),
        (py[4].strip(), cc[5].strip()),
      ]
    elif kind == 1:
      py = ["def f(x):", f"    if x > {b}:", f"        return x - {a}", f"    return x * {c}"]
      cc = ["int f(int x) {", f"  if (x > {b}) {{", f"    return x - {a};", "  }", f"  return x * {c};", "}"]
      snippets = [(py[1].strip(), cc[1].strip()), (py[2].strip(), cc[2].strip()), (py[3].strip(), cc[4].strip())]
    else:
      py = [
        "def f(n):",
        "    c = 0",
        "    while n > 0:",
        f"        c += n % {a}",
        f"        n //= {a}",
        f"    return c + {b}",
      ]
      cc = [
        "int f(int n) {",
        "  int c = 0;",
        "  while (n > 0) {",
        f"    c += n % {a};",
        f"    n /= {a};",
        "  }",
        f"  return c + {b};",
        "}",
      ]
      snippets = [
        (py[1].strip(), cc[1].strip()),
        (py[2].strip(), cc[2].strip()),
        (py[3].strip(), cc[3].strip()),
        (py[4].strip(), cc[4].strip()),
        (py[5].strip(), cc[6].strip()),
      ]
    pa.append({"src": "\n".join(py) + "\n", "tgt": "\n".join(cc), "src_lang": "python", "tgt_lang": "cpp"})
    sa += [{"src": s, "tgt": t, "src_lang": "python", "tgt_lang": "cpp"} for s, t in snippets]
  return sa, pa


def order_study(
  sa: Sequence[dict],
  pa: Sequence[dict],
  pa_test: Sequence[dict],
  workdir: str | os.PathLike,
  *,
  steps: int = 300,
  orders: Sequence[tuple[str, str]] = (("sa", "pa"), ("pa", "sa")),
  seq_len: int = 256,
  batch_size: int = 8,
  lr: float = 3e-3,
  progress: bool = False,
) -> dict[str, dict[str, float]]:
  r"""The paper's comparison at equal compute: PA-only for ``steps`` against each two-stage ``order`` with
  ``steps // 2`` per stage, on the byte-level ``smoke`` model; measured by the held-out target-token loss
  (nats/token) on ``pa_test`` (4 batches; refused when it shares a pair with the training data). Returns ``{"PA only": {...}, "SA->PA": {...}, ...}``; what
  ``benchmarks/bench_codetrans.py`` and ``jaxeff tour`` report."""
  from jaxeff.training.data import PackedIterator, load_rows
  from jaxeff.training.presets import PRESETS
  from jaxeff.training.trainer import evaluate, train_and_evaluate

  assert_disjoint(pa_test, sa, pa)
  work = Path(workdir)
  for name, pairs in (("sa", sa), ("pa", pa), ("test", pa_test)):
    build_examples(pairs, work / f"{name}.npz", seq_len=seq_len)
  base = dataclasses.replace(
    PRESETS["smoke"](),
    seq_len=seq_len,
    batch_size=batch_size,
    eval_every=0,
    warmup_steps=10,
    lr=lr,
    checkpoint_every=1000,
  )
  rows, masks = load_rows(work / "test.npz", "train", seq_len)
  it = PackedIterator(rows, batch_size, seed=0, loss_masks=masks)
  test_batches = [next(it) for _ in range(4)]
  loss = lambda res: float(evaluate(res.params, test_batches, config=res.model_config)["loss"])
  res = train_and_evaluate(
    dataclasses.replace(base, corpora=(f"npz:{work / 'pa.npz'}",), weights=(1.0,), steps=steps),
    work / "pa_only",
    progress=progress,
  )
  out = {"PA only": {"test_target_loss": loss(res), "steps": steps}}
  for order in orders:
    _, r2 = train_two_stage(
      {"sa": work / "sa.npz", "pa": work / "pa.npz"},
      base,
      TwoStage(order=tuple(order), stage_steps=(steps // 2, steps - steps // 2), lrs=(lr, lr)),
      work / "-".join(order),
      progress=progress,
    )
    out[f"{order[0].upper()}->{order[1].upper()}"] = {"test_target_loss": loss(r2), "steps": steps}
  return out


def extract_function(text: str, lang: str) -> str:
  """The first function of a generated text: Python up to the first non-indented line after the ``def`` body;
  C++ / Java up to the brace that closes the first opened one."""
  if lang == "python":
    lines = text.splitlines()
    out, started = [], False
    for line in lines:
      if not started:
        if line.lstrip().startswith("def "):
          started = True
          out.append(line)
        continue
      if line.strip() and not line[:1].isspace():
        break
      out.append(line)
    return "\n".join(out).rstrip() + "\n" if out else text
  depth, opened = 0, False
  for i, ch in enumerate(text):
    if ch == "{":
      depth += 1
      opened = True
    elif ch == "}":
      depth -= 1
      if opened and depth == 0:
        return text[: i + 1]
  return text


class SamplerTranslator:
  """A ``Generator`` for the evaluator from a jaxeff model: prompt = the template with the source function; n
  samples per problem in one batched call; the function extracted from each output."""

  def __init__(
    self,
    sampler,
    tokenizer=None,
    *,
    template: str = TEMPLATE,
    max_new_tokens: int = 256,
    temperature: float = 0.8,
    top_p: float = 0.95,
    seed: int = 0,
  ):
    self.sampler, self.tok, self.template = sampler, tokenizer or ByteTokenizer(), template
    self.max_new_tokens, self.temperature, self.top_p, self.seed = max_new_tokens, temperature, top_p, seed

  def __call__(self, problems, n: int) -> list[list[str]]:
    import jax

    from jaxeff.generation.sampler import SamplingParams

    prompts = [
      self.tok.encode(
        self.template.format(src_lang=LANG_NAMES[p.src_lang], tgt_lang=LANG_NAMES[p.tgt_lang], src=p.src_code)
      )
      for p in problems
    ]
    limit = self.sampler.config.max_position_embeddings - self.max_new_tokens
    prompts = [p[-limit:] for p in prompts]  # keep the end (the source and the target header) if too long
    sp = SamplingParams(
      max_new_tokens=self.max_new_tokens,
      temperature=self.temperature,
      top_p=self.top_p,
      n_samples=n,
      stop_tokens=(self.tok.eos_id,),
      pad_id=getattr(self.tok, "pad_id", 0) or 0,
    )
    res = self.sampler.generate(prompts, sp, jax.random.key(self.seed))
    out = []
    for b, p in enumerate(problems):
      out.append(
        [extract_function(self.tok.decode(res.tokens[b, s, : res.lengths[b, s]]), p.tgt_lang) for s in range(n)]
      )
    return out
