"""Dequantizing matmul over bit-plane packed weights (CAMERA-Q experts): reference (the f32 oracle), XLA path
(fast on CPU), Pallas kernel (TPU), and ``api.dequant_matmul`` over them."""

from kernels_pallas.dequant_matmul.api import IMPLEMENTATIONS as IMPLEMENTATIONS
from kernels_pallas.dequant_matmul.api import BlockSizes as BlockSizes
from kernels_pallas.dequant_matmul.api import default_implementation as default_implementation
from kernels_pallas.dequant_matmul.api import dequant_matmul as dequant_matmul
from kernels_pallas.dequant_matmul.reference import dequant_matmul_reference as dequant_matmul_reference
from kernels_pallas.dequant_matmul.reference import dequantize as dequantize
