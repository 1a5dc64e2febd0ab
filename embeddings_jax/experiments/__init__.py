"""Experiments that use embeddings-jax end to end (run them with ``embeddings-jax <name>``).

* :mod:`embeddings_jax.experiments.extrapolation`: train tiny decoder-only transformers
  with each position method at one length and measure accuracy at longer lengths.
"""
