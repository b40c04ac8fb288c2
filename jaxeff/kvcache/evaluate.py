"""Deprecated (one release): the cached evaluation moved to ``jaxeff.evals.cached`` (a cache module no longer
depends on the corpora and the trainer)."""

_MOVED = ("cached_bits_per_byte", "cached_needle_accuracy", "teacher_forced")


def __getattr__(name):
  if name in _MOVED:
    import warnings

    warnings.warn(
      f"jaxeff.kvcache.evaluate.{name} moved to jaxeff.evals.cached.{name}", DeprecationWarning, stacklevel=2
    )
    from jaxeff.evals import cached

    return getattr(cached, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
