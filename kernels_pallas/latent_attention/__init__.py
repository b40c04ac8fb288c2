"""CommonKV latent decode attention: keys rebuilt from latents with RoPE inside the loop, values absorbed;
float32 reference, XLA path, Pallas TPU and GPU kernels, int8-latent variant."""

from kernels_pallas.latent_attention.api import IMPLEMENTATIONS as IMPLEMENTATIONS
from kernels_pallas.latent_attention.api import BlockSizes as BlockSizes
from kernels_pallas.latent_attention.api import default_implementation as default_implementation
from kernels_pallas.latent_attention.api import latent_decode_attention as latent_decode_attention
from kernels_pallas.latent_attention.reference import latent_decode_reference as latent_decode_reference
