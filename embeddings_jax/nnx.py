"""Flax NNX modules for token and position embeddings.

The same modules, arguments and parameters as :mod:`embeddings_jax.linen`, for
``flax.nnx``: each holds its ``nnx.Param`` (with logical-axis sharding metadata) and
forwards to one function of :mod:`embeddings_jax`.
"""

from embeddings_jax._src.nnx_modules import (
    ALiBi,
    PositionEmbed,
    RelativePositionBias,
    RotaryEmbedding,
    SinusoidalPositionEmbed,
    TokenAndPositionEmbed,
    TokenEmbed,
)

__all__ = (
    "ALiBi",
    "PositionEmbed",
    "RelativePositionBias",
    "RotaryEmbedding",
    "SinusoidalPositionEmbed",
    "TokenAndPositionEmbed",
    "TokenEmbed",
)
