"""A tiny Flax transformer and a synthetic copy task, used by the notebooks and plots."""

from embeddings_jax._src.demo import TinyTransformer, copy_task_batch, train_copy_task

__all__ = ("TinyTransformer", "copy_task_batch", "train_copy_task")
