"""Mixture-of-experts compression: CAMERA micro-expert energy and structured pruning (``jaxeff.moe.camera``)."""
