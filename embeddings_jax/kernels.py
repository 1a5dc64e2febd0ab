"""The optional compiled CPU kernels: whether they are available, and switching them off.

``pip install`` builds two XLA:CPU kernels when a C++17 compiler is present: the fused
gather + add + LayerNorm of ``embed_and_add(..., norm=...)`` and the gradient of a
table lookup. Where they run is decided when a computation is lowered: on CPU, on one
device (or per device under ``shard_map``), not for ``jax.export``; everywhere else
(and without a compiler) the XLA formulation runs, with the same results to float32
rounding.
"""

from embeddings_jax._src.kernels import disabled, status

__all__ = ("disabled", "status")
