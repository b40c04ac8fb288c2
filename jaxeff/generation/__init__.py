"""The batched sampler (n samples per prompt sharing one prefill, per-token logprobs, accounting) and the
methods built on it (``seersc``: SeerSC, SC, ESC, ASC; ``answers``: answer extraction)."""

from jaxeff.generation.sampler import Accounting as Accounting
from jaxeff.generation.sampler import GenerationResult as GenerationResult
from jaxeff.generation.sampler import Sampler as Sampler
from jaxeff.generation.sampler import SamplingParams as SamplingParams
from jaxeff.generation.sampler import generate as generate
from jaxeff.generation.sampler import sample_logits as sample_logits
