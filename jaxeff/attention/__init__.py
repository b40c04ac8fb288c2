"""Prefill attention backends (values the model calls without knowing which): exact ``Dense``, ProxyAttn's
``ProxyAttention`` and its peers ``XAttention``, ``FlexPrefill``, ``MeanPoolTopK`` on one block-sparse kernel, with
the density-matched controls ``RandomBlocks`` and ``LocalBlocks``."""

from jaxeff.attention.dense import Dense as Dense
from jaxeff.attention.dense import TrainingAttention as TrainingAttention
from jaxeff.attention.dense import flash_attention as flash_attention
from jaxeff.attention.dense import masked_attention as masked_attention
from jaxeff.attention.dense import position_mask as position_mask
from jaxeff.attention.dense import reference_attention as reference_attention
from jaxeff.attention.peers import FlexPrefill as FlexPrefill
from jaxeff.attention.peers import LocalBlocks as LocalBlocks
from jaxeff.attention.peers import MeanPoolTopK as MeanPoolTopK
from jaxeff.attention.peers import RandomBlocks as RandomBlocks
from jaxeff.attention.peers import XAttention as XAttention
from jaxeff.attention.proxy import ProxyAttention as ProxyAttention
from jaxeff.attention.proxy import estimate as estimate


def make_prefill_backend(
  name: str, config=None, *, gamma: float = 0.95, block_size: int = 128, min_budget_tokens: int = 2048, **kw
):
  """A prefill backend by name: 'dense', 'proxy' (per-model proxy count when ``config`` is given),
  'xattention' (``gamma`` is its threshold) or 'flexprefill'. Extra keywords go to the backend."""
  if name == "dense":
    return Dense()
  if name == "proxy":
    common = dict(gamma=gamma, block_size=block_size, min_budget_tokens=min_budget_tokens, **kw)
    return ProxyAttention.for_model(config, **common) if config is not None else ProxyAttention(**common)
  if name == "xattention":
    return XAttention(block_size=block_size, threshold=gamma, **kw)
  if name == "flexprefill":
    return FlexPrefill(block_size=block_size, gamma=gamma, **kw)
  raise ValueError(f"unknown prefill attention {name!r}; choose from dense, proxy, xattention, flexprefill")
