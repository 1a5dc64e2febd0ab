"""Measure how much each layer's representation is driven by token identity vs position.

Capture per-layer hidden states from any Flax model (``capture_intermediates=True`` or
``nn.Module.sow``), flatten them with :func:`hidden_states_from_intermediates`, and call
:func:`token_position_scores` for a per-layer table and plot.
"""

from embeddings_jax._src.inspect import (
    InspectReport,
    hidden_states_from_intermediates,
    probe_accuracy,
    token_position_scores,
    variance_explained,
)

__all__ = (
    "InspectReport",
    "hidden_states_from_intermediates",
    "probe_accuracy",
    "token_position_scores",
    "variance_explained",
)
