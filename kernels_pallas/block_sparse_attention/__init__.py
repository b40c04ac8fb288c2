"""Block-sparse causal prefill attention (ProxyAttn and its peers share it): a float32 reference, an XLA
path that is fast on CPU, a Pallas TPU kernel (scalar prefetch) and a Pallas GPU kernel (Triton)."""

from kernels_pallas.block_sparse_attention.api import IMPLEMENTATIONS as IMPLEMENTATIONS
from kernels_pallas.block_sparse_attention.api import BlockSizes as BlockSizes
from kernels_pallas.block_sparse_attention.api import block_sparse_attention as block_sparse_attention
from kernels_pallas.block_sparse_attention.api import default_blocks_per_step as default_blocks_per_step
from kernels_pallas.block_sparse_attention.api import default_implementation as default_implementation
from kernels_pallas.block_sparse_attention.reference import (
  block_sparse_attention_reference as block_sparse_attention_reference,
)
from kernels_pallas.block_sparse_attention.reference import index_dtype as index_dtype
from kernels_pallas.block_sparse_attention.reference import indices_to_mask as indices_to_mask
from kernels_pallas.block_sparse_attention.reference import mask_to_indices as mask_to_indices
from kernels_pallas.block_sparse_attention.reference import pad_indices as pad_indices
from kernels_pallas.block_sparse_attention.reference import window_indices as window_indices
