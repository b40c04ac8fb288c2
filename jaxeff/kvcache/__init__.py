"""KV caches behind one protocol (init / prefill / append / attend): full precision now."""

from jaxeff.kvcache.base import FullCache as FullCache
from jaxeff.kvcache.base import KVCache as KVCache
from jaxeff.kvcache.base import LayerKV as LayerKV
