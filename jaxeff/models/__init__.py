"""The jaxeff decoder family (Llama, Mistral, Qwen2, Qwen3), its Hugging Face and GGUF checkpoint I/O, and the
real pretrained models fetched from registry packages."""

from jaxeff.models.decoder import count_params as count_params
from jaxeff.models.decoder import feed_forward as feed_forward
from jaxeff.models.decoder import forward as forward
from jaxeff.models.decoder import init_params as init_params
from jaxeff.models.decoder import param_logical_axes as param_logical_axes
from jaxeff.models.decoder import param_shapes as param_shapes
from jaxeff.models.decoder import param_specs as param_specs
from jaxeff.models.decoder import register_feed_forward as register_feed_forward
from jaxeff.models.decoder import rms_norm as rms_norm
from jaxeff.models.decoder import rope as rope
from jaxeff.models.embedded import load as load
from jaxeff.models.gguf import gguf_to_hf as gguf_to_hf
from jaxeff.models.gguf import load_gguf as load_gguf
from jaxeff.models.hf_io import CheckpointError as CheckpointError
from jaxeff.models.hf_io import check_checkpoint as check_checkpoint
from jaxeff.models.hf_io import hf_table as hf_table
from jaxeff.models.hf_io import load_hf as load_hf
from jaxeff.models.hf_io import read_config as read_config
from jaxeff.models.hf_io import save_hf as save_hf
from jaxeff.models.registry import REAL_MODELS as REAL_MODELS
from jaxeff.models.registry import fetch_model as fetch_model
from jaxeff.models.registry import load_real_model as load_real_model
