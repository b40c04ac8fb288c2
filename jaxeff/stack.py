r"""The composed inference stack: one ``generate`` call with every inference method of jaxeff switched on.

A ``Stack`` names one choice per axis and builds the ``Sampler`` that runs them together:

* prefill attention: ``attention=ProxyAttention(gamma=0.95)`` (ProxyAttn, arXiv 2509.24745); decode stays dense;
* KV layout: ``latent_rank`` / ``latent_ratio`` factorise each group of ``latent_group`` layers' K/V projections
  by one SVD and cache one latent per token (CommonKV, arXiv 2508.16134);
* eviction: ``press=JudgeQPress(soft, budget=0.1)`` (Judge Q, arXiv 2509.10798) or any ``Press`` keeps
  ``budget`` of the prompt entries after prefill;
* precision: ``kv_bits=4`` (or 8) quantizes what the cache stores: the latents when CommonKV is on, else the
  keys and values (per-token groups);
* weights: pass CAMERA-compacted MoE parameters (``jaxeff.moe.camera.compact``) as ``params``.

The pieces meet in the cache protocol (``jaxeff.kvcache.base``): the prefill backend attends within the prompt,
the press scores the prompt keys and writes the kept rows through its inner cache (latent and/or quantized),
decode attends over what is left. Each axis has an identity setting (``attention=None`` or a ProxyAttn whose
``min_budget_tokens`` covers the prompt, a full-rank latent, ``budget=1.0``, ``kv_bits=None``, CAMERA ratio 0)
and with the others at identity the stack reproduces each piece alone (``tests/test_stack.py``).

Memory per cached token and layer, for K kv heads of width H:

.. math:: \underbrace{2KH \cdot b}_{\text{full}} \;\to\; \text{budget} \cdot r_\ell \cdot \tfrac{\text{bits}}{8}
   \;(+\,8 \text{ bytes of scale/min per token when quantized})

Example:
  >>> import jax
  >>> from jaxeff.config import ModelConfig
  >>> from jaxeff.models import init_params
  >>> from jaxeff.attention import ProxyAttention
  >>> from jaxeff.kvcache import Press
  >>> from jaxeff.generation import SamplingParams
  >>> cfg = ModelConfig.tiny(); params = init_params(cfg, jax.random.key(0))
  >>> stack = Stack(attention=ProxyAttention(gamma=0.9, block_size=16, min_budget_tokens=16),
  ...               latent_rank=16, press=Press("snapkv", budget=0.5), kv_bits=4)
  >>> out = stack.sampler(cfg, params).generate([list(range(64))], SamplingParams(max_new_tokens=4),
  ...                                           jax.random.key(0))
  >>> out.tokens.shape
  (1, 1, 4)
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any

from jaxeff.config import ModelConfig

BITS = (None, 4, 8)


@functools.cache
def _option_defaults() -> dict[str, Any]:
  """``Stack.from_options``'s keyword defaults, read from its signature (one source for the inert-option check)."""
  return {n: p.default for n, p in inspect.signature(Stack.from_options).parameters.items()}


@dataclasses.dataclass(frozen=True)
class Stack:
  """One choice per axis of the inference stack (module docstring); ``sampler(config, params)`` builds it.

  Args:
    attention: prefill attention backend (``ProxyAttention(...)``; None = dense).
    latent_rank: CommonKV latent rank per layer group (None with ``latent_ratio`` None: no CommonKV).
    latent_ratio: CommonKV latent rank as a fraction of the group's maximum rank (instead of ``latent_rank``).
    latent_group: layers sharing one latent (CommonKV group size; must divide the number of layers).
    latent_merge_rho: merge the latents across each group's layers after prefill, keeping this least-similar
      fraction unmerged (CommonKV's cross-layer merge; None = off; not with a press).
    latent_select_tiles: CommonKV selective reconstruction at decode: rebuild keys only for this many tiles of
      32 slots per step, chosen by their key bound (``jaxeff.kvcache.LatentCache``; None = every key; not with
      the merge or a press).
    press: an eviction press (``Press``, ``JudgeQPress``); composed with a latent or quantized cache it keeps one
      set of entries for all kv heads (``per_head=False``, set here).
    kv_bits: 4 or 8 to quantize the cached latents (CommonKV) or keys/values; None keeps full precision.
    quant_group: group size of the key/value quantization (per-token groups; capped at the head dim).

  Raises:
    ValueError: both latent options, a rank/ratio out of range, bits outside {4, 8}, a press that is not a
    ``Press`` (raised at construction, before any work).
  """

  attention: Any = None
  latent_rank: int | None = None
  latent_ratio: float | None = None
  latent_group: int = 2
  latent_merge_rho: float | None = None
  latent_select_tiles: int | None = None
  press: Any = None
  kv_bits: int | None = None
  quant_group: int = 32

  def __post_init__(self):
    from jaxeff.kvcache.eviction import Press

    errors = []
    if self.latent_rank is not None and self.latent_ratio is not None:
      errors.append("give latent_rank or latent_ratio, not both")
    if self.latent_rank is not None and self.latent_rank < 1:
      errors.append(f"latent_rank must be >= 1, got {self.latent_rank}")
    if self.latent_ratio is not None and not 0.0 < self.latent_ratio <= 1.0:
      errors.append(f"latent_ratio must be in (0, 1], got {self.latent_ratio}")
    if self.latent_merge_rho is not None and not (self.latent and 0.0 < self.latent_merge_rho <= 1.0):
      errors.append(f"latent_merge_rho needs a latent and a value in (0, 1], got {self.latent_merge_rho}")
    if self.latent_merge_rho is not None and self.press is not None:
      errors.append("the cross-layer latent merge and an eviction press do not compose in this version")
    if self.latent_group < 1:
      errors.append(f"latent_group must be >= 1, got {self.latent_group}")
    if self.latent_select_tiles is not None:
      if not self.latent or self.latent_select_tiles < 2:
        errors.append(f"latent_select_tiles needs a latent and a value >= 2, got {self.latent_select_tiles}")
      if self.latent_merge_rho is not None or self.press is not None:
        errors.append("latent_select_tiles does not compose with the latent merge or a press in this version")
    if self.kv_bits not in BITS:
      errors.append(f"kv_bits must be None, 4 or 8, got {self.kv_bits}")
    if self.press is not None and not isinstance(self.press, Press):
      errors.append(f"press must be a jaxeff.kvcache.Press (or JudgeQPress), got {type(self.press).__name__}")
    if self.quant_group < 1:
      errors.append(f"quant_group must be >= 1, got {self.quant_group}")
    if errors:
      raise ValueError("invalid Stack: " + "; ".join(errors))

  @classmethod
  def from_options(
    cls,
    config: ModelConfig,
    *,
    prefill_attention: str = "dense",
    gamma: float = 0.95,
    block_size: int = 128,
    min_budget_tokens: int = 2048,
    kv_cache: str = "full",
    kv_rank: int | None = None,
    kv_group: int = 2,
    kv_bits: int | None = None,
    kv_merge_rho: float | None = None,
    kv_press: str = "none",
    kv_budget: float = 0.2,
    kv_window: int = 8,
    judgeq: str | None = None,
    kv_select_tiles: int | None = None,
  ) -> Stack:
    """The stack named by flat options (the ``--prefill-attention`` / ``--kv-*`` flags of ``jaxeff generate`` and
    ``jaxeff eval long``; each option's meaning is in their ``--help``).

    ``kv_cache``: 'full', 'int8' / 'int4' (quantized keys and values) or 'commonkv' (latents of rank ``kv_rank``,
    default half the group's maximum, quantized to ``kv_bits`` if given, merged across layers with
    ``kv_merge_rho``, decoded with selective reconstruction of ``kv_select_tiles`` tiles); ``kv_press``: 'none' or a ``Press`` scorer ('judgeq' needs ``judgeq``, a folder of soft
    tokens); ``kv_budget``: a ratio in (0, 1] or a token count when >= 1 and integral.

    Example:
      >>> Stack.from_options(ModelConfig.tiny(), kv_cache="commonkv", kv_bits=4, kv_press="snapkv",
      ...                    kv_budget=0.1).describe()
      'dense + commonkv(0.5) + snapkv(0.1) + int4'
    """
    from jaxeff.attention import make_prefill_backend
    from jaxeff.kvcache.eviction import Press
    from jaxeff.kvcache.judgeq import JudgeQPress, SoftTokens

    if kv_cache not in ("full", "int8", "int4", "commonkv"):
      raise ValueError(f"kv_cache must be full, int8, int4 or commonkv, got {kv_cache!r}")
    latent = kv_cache == "commonkv"
    if kv_bits is not None and not latent:
      raise ValueError("kv_bits quantizes CommonKV latents; for quantized keys and values use kv_cache='int8'/'int4'")
    # An option that does nothing in the chosen configuration is an error, not silently ignored: any option
    # changed from its default (this signature's) while the piece it configures is off.
    given = dict(
      kv_rank=kv_rank,
      kv_group=kv_group,
      kv_merge_rho=kv_merge_rho,
      kv_select_tiles=kv_select_tiles,
      kv_budget=kv_budget,
      kv_window=kv_window,
      judgeq=judgeq,
      gamma=gamma,
      block_size=block_size,
      min_budget_tokens=min_budget_tokens,
    )
    needs = {}
    if not latent:
      needs.update(dict.fromkeys(("kv_rank", "kv_group", "kv_merge_rho", "kv_select_tiles"), "kv_cache='commonkv'"))
    if kv_press == "none":
      needs.update(dict.fromkeys(("kv_budget", "kv_window", "judgeq"), "an eviction press (kv_press)"))
    elif kv_press != "judgeq":
      needs["judgeq"] = "kv_press='judgeq'"
    if prefill_attention == "dense":
      needs.update(dict.fromkeys(("gamma", "block_size", "min_budget_tokens"), "a sparse prefill_attention"))
    defaults = _option_defaults()
    bad = [f"{n} (--{n.replace('_', '-')}) only applies with {w}" for n, w in needs.items() if given[n] != defaults[n]]
    if bad:
      raise ValueError("options that would do nothing here: " + "; ".join(bad))
    bits = int(kv_cache[3:]) if kv_cache in ("int8", "int4") else kv_bits
    press = None
    if kv_press != "none":
      budget = int(kv_budget) if kv_budget > 1 and float(kv_budget).is_integer() else float(kv_budget)
      opts = dict(budget=budget, window_size=kv_window)
      if kv_press == "judgeq":
        if not judgeq:
          raise ValueError(
            "the judgeq press needs judgeq= (--judgeq DIR), a folder of trained soft tokens (`jaxeff judgeq train`)"
          )
        press = JudgeQPress(SoftTokens.load(judgeq), **opts)
      else:
        press = Press(kv_press, **opts)
    # jaxeff's sampler right-pads prompts, so valid tokens come first unless Judge Q appends its soft tokens
    # after the padding: without that press the block-sparse backends skip the run-time packing branch
    # (its copies of q, k, v and the output are most of the prefill's memory at long context).
    packing = {} if prefill_attention == "dense" or kv_press == "judgeq" else {"packing": "assume_in_front"}
    attention = make_prefill_backend(
      prefill_attention, config, gamma=gamma, block_size=block_size, min_budget_tokens=min_budget_tokens, **packing
    )
    return cls(
      attention=attention,
      latent_rank=kv_rank if latent else None,
      latent_ratio=0.5 if latent and kv_rank is None else None,
      latent_group=kv_group,
      latent_merge_rho=kv_merge_rho if latent else None,
      latent_select_tiles=kv_select_tiles if latent else None,
      press=press,
      kv_bits=bits,
    )

  @property
  def latent(self) -> bool:
    return self.latent_rank is not None or self.latent_ratio is not None

  def prepare(self, config: ModelConfig, params: Any) -> tuple[Any, Any]:
    """``(params, cache factory)``: CommonKV-factorised parameters when a latent is asked for, and the cache
    factory of the stack (``FullCache``, ``Quantized``, ``CommonKV`` or a ``Press`` over one of them)."""
    from jaxeff.kvcache import CommonKV, FullCache, Quantized, compress

    if config.n_layers % self.latent_group and self.latent:
      raise ValueError(f"latent_group {self.latent_group} does not divide the model's {config.n_layers} layers")
    if self.latent:
      _, params, spec, _ = compress(
        config, params, group_size=self.latent_group, rank=self.latent_rank, ratio=self.latent_ratio
      )
      merge = self.latent_merge_rho is not None
      inner = CommonKV(
        spec,
        bits=self.kv_bits,
        merge=merge,
        rho=self.latent_merge_rho if merge else 0.4,
        select_tiles=self.latent_select_tiles,
      )
    elif self.kv_bits is not None:
      inner = Quantized(bits=self.kv_bits, group_size=min(self.quant_group, config.head_dim))
    else:
      inner = FullCache
    if self.press is None:
      return params, inner
    if inner is FullCache:
      return params, self.press
    return params, dataclasses.replace(self.press, per_head=False, inner=inner)

  def sampler(self, config: ModelConfig, params: Any, **kw):
    """The ``Sampler`` running the whole stack (``kw``: further ``Sampler`` options, e.g. ``pad_multiple``)."""
    from jaxeff.generation.sampler import Sampler

    params, cache = self.prepare(config, params)
    return Sampler(config, params, attention=self.attention, cache=cache, **kw)

  def describe(self) -> str:
    """One line naming the active pieces, e.g. ``proxyattn + commonkv(r=16) + judgeq(0.1) + int4``."""
    parts = []
    if self.attention is not None:
      parts.append(type(self.attention).__name__.lower().replace("attention", "attn"))
    if self.latent:
      parts.append(f"commonkv(r={self.latent_rank})" if self.latent_rank else f"commonkv({self.latent_ratio:g})")
      if self.latent_select_tiles is not None:
        parts[-1] += f"+select{self.latent_select_tiles}"
    if self.press is not None:
      parts.append(f"{self.press.scorer}({self.press.budget:g})")
    if self.kv_bits is not None:
      parts.append(f"int{self.kv_bits}")
    return " + ".join(parts) or "dense + full cache"
