"""Dequantizing matmul over bit-plane packed weights (CAMERA-Q experts): reference, XLA and Pallas paths."""
