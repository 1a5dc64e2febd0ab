"""Small reference models built on :mod:`embeddings_jax` (read them, copy them).

* :mod:`embeddings_jax.examples.attention`: multi-head attention taking rotary, ALiBi
  or T5 relative positions, with an explicit KV cache for decoding.
"""
