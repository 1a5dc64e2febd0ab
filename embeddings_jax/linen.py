"""Flax linen modules for token and position embeddings.

Thin wrappers over the functional API of :mod:`embeddings_jax`: each module holds its
parameters (with logical axis names) and a dtype policy, and forwards to one function.
"""

from embeddings_jax._src.linen_modules import (
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
