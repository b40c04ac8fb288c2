"""Prefill attention backends (values the model calls without knowing which): Dense now, ProxyAttn later."""

from jaxeff.attention.dense import Dense as Dense
from jaxeff.attention.dense import masked_attention as masked_attention
from jaxeff.attention.dense import position_mask as position_mask
from jaxeff.attention.dense import reference_attention as reference_attention
