"""jaxeff: efficient LLM inference and training research in JAX/Flax.

Public entry points: ``ModelConfig`` (jaxeff.config), ``forward`` / ``init_params`` / ``load_hf`` /
``save_hf`` (jaxeff.models), ``Dense`` (jaxeff.attention), ``FullCache`` (jaxeff.kvcache) and
``generate`` / ``Sampler`` (jaxeff.generation).
"""

__version__ = "0.1.0"

from jaxeff.config import ModelConfig as ModelConfig
from jaxeff.config import RopeScaling as RopeScaling
