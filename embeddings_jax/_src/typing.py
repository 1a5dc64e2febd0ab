"""Array aliases shared across the package.

Shapes are written in the axis vocabulary ``batch, seq, heads, head_dim, vocab,
features`` with jaxtyping's notation: ``Float[Array, "vocab features"]``. ``*batch``
means any number of leading axes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

import jax
from jaxtyping import Array, ArrayLike, Bool, Float, Int, Shaped

__all__ = [
    "Array",
    "ArrayLike",
    "Bool",
    "Dtype",
    "Float",
    "Initializer",
    "Int",
    "PRNGKey",
    "Shaped",
]

Dtype: TypeAlias = Any  # anything ``jnp.dtype`` accepts: jnp.float32, "bfloat16", np.dtype
PRNGKey: TypeAlias = jax.Array
Initializer: TypeAlias = Callable[[PRNGKey, tuple[int, ...], Dtype], jax.Array]
