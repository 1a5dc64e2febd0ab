"""What the ``embeddings-jax`` command runs: benchmarks, plots, experiments, toy models.

Not part of the library: nothing in :mod:`embeddings_jax` imports this package, and
these modules use only the public API (:mod:`embeddings_jax`,
:mod:`embeddings_jax.linen`, :mod:`embeddings_jax.nnx`). They need the ``bench`` extra
(``pip install 'embeddings-jax[bench]'``: optax, matplotlib, rich).
"""
