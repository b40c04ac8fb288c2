"""Deprecated (one release): the cached evaluation moved to ``jaxeff.evals.cached`` (a cache module no longer
depends on the corpora and the trainer)."""

from jaxeff._deprecation import moved

__getattr__ = moved(
  __name__, {n: "jaxeff.evals.cached" for n in ("cached_bits_per_byte", "cached_needle_accuracy", "teacher_forced")}
)
