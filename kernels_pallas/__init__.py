"""Pallas kernels for jaxeff, one folder per kernel (reference.py, kernel.py, api.py).

This package depends on jax alone and knows nothing of jaxeff. Kernels land with their method issues
(block-sparse prefill attention for ProxyAttn, latent decode attention for CommonKV).
"""
