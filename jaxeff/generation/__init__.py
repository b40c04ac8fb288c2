"""The batched sampler (n samples per prompt sharing one prefill, per-token logprobs, accounting) and the
methods built on it (``seersc``: SeerSC, SC, ESC, ASC; ``answers``: answer extraction); ``context``: compress a
context once, then ask it questions (``compress_context`` / ``answer``)."""

from jaxeff.generation.context import CompressedContext as CompressedContext
from jaxeff.generation.context import answer as answer
from jaxeff.generation.context import compress_context as compress_context
from jaxeff.generation.sampler import Accounting as Accounting
from jaxeff.generation.sampler import GenerationResult as GenerationResult
from jaxeff.generation.sampler import Sampler as Sampler
from jaxeff.generation.sampler import SamplingParams as SamplingParams
from jaxeff.generation.sampler import generate as generate
from jaxeff.generation.sampler import sample_logits as sample_logits
