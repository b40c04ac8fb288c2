"""KV caches behind one protocol (init / prefill / append / attend): full precision, int8/int4 quantized, and
CommonKV latent caches (with the cross-layer merge), MLA-style latent caches of a converted model (``to_mla``), the MiniCache peer, and the eviction presses (Judge Q among them) that compact
any of them after prefill. The cache and cache-factory protocols live at the seam below (``jaxeff.models.cache``).

Naming: a cache **pytree** ends in ``Cache`` (``FullCache``, ``QuantizedCache``, ``LatentCache``, ``EvictedCache``,
``MiniMergedCache``); a cache **factory** is named for the method or setting it builds (``Quantized``,
``CommonKV``, ``Press``, ``JudgeQPress``, ``MiniCacheMerge``, ``Windowed``). ``FullCache`` is the one class that is both: it is
its own factory (``FullCache.init``)."""

from jaxeff._deprecation import moved
from jaxeff.kvcache.base import FullCache as FullCache
from jaxeff.kvcache.base import KVCache as KVCache
from jaxeff.kvcache.base import LayerKV as LayerKV
from jaxeff.kvcache.base import RingLayerKV as RingLayerKV
from jaxeff.kvcache.base import Windowed as Windowed
from jaxeff.kvcache.commonkv import CommonKV as CommonKV
from jaxeff.kvcache.commonkv import LatentCache as LatentCache
from jaxeff.kvcache.commonkv import LatentSpec as LatentSpec
from jaxeff.kvcache.commonkv import compress as compress
from jaxeff.kvcache.commonkv import merge_after_prefill as merge_after_prefill
from jaxeff.kvcache.eviction import Press as Press
from jaxeff.kvcache.judgeq import JudgeQPress as JudgeQPress
from jaxeff.kvcache.judgeq import SoftTokens as SoftTokens
from jaxeff.kvcache.mla import MLA as MLA
from jaxeff.kvcache.mla import MLACache as MLACache
from jaxeff.kvcache.mla import MLASpec as MLASpec
from jaxeff.kvcache.mla import to_mla as to_mla
from jaxeff.kvcache.peers import MiniCacheMerge as MiniCacheMerge
from jaxeff.kvcache.quantized import Quantized as Quantized
from jaxeff.kvcache.quantized import QuantizedCache as QuantizedCache

# renamed (a factory, not a cache pytree); the old name is kept for one release
__getattr__ = moved(__name__, {"MiniCache": "jaxeff.kvcache.peers:MiniCacheMerge"})
