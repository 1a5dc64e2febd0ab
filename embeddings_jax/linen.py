"""Flax linen modules for token and position embeddings.

Thin front ends over the functional API of :mod:`embeddings_jax`: each module holds its
parameters (with logical axis names) and a dtype policy, and forwards to one function.
The same modules, attributes and parameters exist for NNX in :mod:`embeddings_jax.nnx`.
"""

from embeddings_jax._src.modules.linen import ALiBi
from embeddings_jax._src.modules.linen import Embed
from embeddings_jax._src.modules.linen import FireBias
from embeddings_jax._src.modules.linen import KerpleBias
from embeddings_jax._src.modules.linen import PositionEmbed
from embeddings_jax._src.modules.linen import RelativePositionBias
from embeddings_jax._src.modules.linen import RotaryEmbedding
from embeddings_jax._src.modules.linen import RotaryEmbedding2D
from embeddings_jax._src.modules.linen import SinusoidalPositionEmbed
from embeddings_jax._src.modules.linen import TokenAndPositionEmbed
from embeddings_jax._src.modules.linen import TokenEmbed
from embeddings_jax._src.modules.linen import TreePositionEmbed

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
