"""Flax NNX modules for token and position embeddings.

The same modules, attributes, parameters and results as :mod:`embeddings_jax.linen`,
for ``flax.nnx``: each holds its ``nnx.Param`` (with the logical axis names as sharding
metadata) and forwards to one function of :mod:`embeddings_jax`.
"""

from embeddings_jax._src.modules.nnx import ALiBi
from embeddings_jax._src.modules.nnx import Embed
from embeddings_jax._src.modules.nnx import FireBias
from embeddings_jax._src.modules.nnx import KerpleBias
from embeddings_jax._src.modules.nnx import PositionEmbed
from embeddings_jax._src.modules.nnx import RelativePositionBias
from embeddings_jax._src.modules.nnx import RotaryEmbedding
from embeddings_jax._src.modules.nnx import RotaryEmbedding2D
from embeddings_jax._src.modules.nnx import SinusoidalPositionEmbed
from embeddings_jax._src.modules.nnx import TokenAndPositionEmbed
from embeddings_jax._src.modules.nnx import TokenEmbed
from embeddings_jax._src.modules.nnx import TreePositionEmbed

__all__ = (
    "ALiBi",
    "Embed",
    "FireBias",
    "KerpleBias",
    "PositionEmbed",
    "RelativePositionBias",
    "RotaryEmbedding",
    "RotaryEmbedding2D",
    "SinusoidalPositionEmbed",
    "TokenAndPositionEmbed",
    "TokenEmbed",
    "TreePositionEmbed",
)
