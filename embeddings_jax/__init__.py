"""embeddings-jax: token and position embeddings for JAX and Flax.

The functional API lives here; Flax modules are in :mod:`embeddings_jax.linen` and
:mod:`embeddings_jax.nnx`.
"""

from embeddings_jax._src.bias import alibi_bias
from embeddings_jax._src.bias import alibi_slopes
from embeddings_jax._src.bias import fire_bias
from embeddings_jax._src.bias import kerple_bias
from embeddings_jax._src.bias import t5_relative_bias
from embeddings_jax._src.bias import t5_relative_bucket
from embeddings_jax._src.compose import embed_and_add
from embeddings_jax._src.kernels import status as cpu_kernel_status
from embeddings_jax._src.norm import layer_norm
from embeddings_jax._src.lookup import ONE_HOT_MAX_VOCAB_TPU
from embeddings_jax._src.lookup import OUT_OF_RANGE_POLICIES
from embeddings_jax._src.lookup import attend
from embeddings_jax._src.lookup import embed
from embeddings_jax._src.mrope import mrope_decode_positions
from embeddings_jax._src.mrope import mrope_positions
from embeddings_jax._src.policy import checked
from embeddings_jax._src.positions import positions
from embeddings_jax._src.positions import positions_from_mask
from embeddings_jax._src.positions import positions_from_offset
from embeddings_jax._src.positions import positions_from_segments
from embeddings_jax._src.rotary import RopeScaling
from embeddings_jax._src.rotary import apply_rope
from embeddings_jax._src.rotary import apply_xpos
from embeddings_jax._src.rotary import attention_temperature
from embeddings_jax._src.rotary import rope_frequencies
from embeddings_jax._src.rotary import rope_scaling_from_hf
from embeddings_jax._src.sharding import vocab_parallel_attend
from embeddings_jax._src.sharding import vocab_parallel_embed
from embeddings_jax._src.sinusoidal import CONVENTIONS
from embeddings_jax._src.sinusoidal import SinusoidalConvention
from embeddings_jax._src.sinusoidal import sinusoidal
from embeddings_jax._src.sinusoidal import sinusoidal_table
from embeddings_jax._src.surgery import extend_positions
from embeddings_jax._src.surgery import load_pretrained
from embeddings_jax._src.surgery import resize_vocab
from embeddings_jax._src.tree import tree_encoding
from embeddings_jax._src.vision import grid_positions
from embeddings_jax._src.vision import resize_position_grid
from embeddings_jax._src.vision import rope_2d
from embeddings_jax._src.vision import sincos_2d

from embeddings_jax import kernels

__version__ = "0.1.0"

__all__ = (
    "CONVENTIONS",
    "ONE_HOT_MAX_VOCAB_TPU",
    "OUT_OF_RANGE_POLICIES",
    "RopeScaling",
    "SinusoidalConvention",
    "alibi_bias",
    "alibi_slopes",
    "apply_rope",
    "apply_xpos",
    "attend",
    "attention_temperature",
    "checked",
    "cpu_kernel_status",
    "embed",
    "embed_and_add",
    "extend_positions",
    "fire_bias",
    "grid_positions",
    "kernels",
    "kerple_bias",
    "layer_norm",
    "load_pretrained",
    "mrope_decode_positions",
    "mrope_positions",
    "positions",
    "positions_from_mask",
    "positions_from_offset",
    "positions_from_segments",
    "resize_position_grid",
    "resize_vocab",
    "rope_2d",
    "rope_frequencies",
    "rope_scaling_from_hf",
    "sincos_2d",
    "sinusoidal",
    "sinusoidal_table",
    "t5_relative_bias",
    "t5_relative_bucket",
    "tree_encoding",
    "vocab_parallel_attend",
    "vocab_parallel_embed",
)
