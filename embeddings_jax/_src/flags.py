"""Process-wide switches that change what a traced function computes.

Both are JAX configuration states included in the ``jit`` cache key, so a function
traced with one setting is traced again (never reused) under another, also when it
was jitted before the switch changed. They are set through public context managers:
:func:`embeddings_jax.checked` turns the data-dependent checks on;
:func:`embeddings_jax.kernels.disabled` turns the compiled kernels off.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

__all__ = ["checks_enabled", "enable_checks", "kernels_enabled", "set_kernels"]

try:  # JAX's own config states: part of the jit cache key.
    from jax._src import config as _jax_config

    _CHECKS = _jax_config.bool_state(
        "embeddings_jax_checks",
        False,
        "Emit checkify checks for out-of-range ids and positions (embeddings_jax.checked).",
        include_in_jit_key=True,
        include_in_trace_context=True,
    )
    _KERNELS = _jax_config.bool_state(
        "embeddings_jax_kernels",
        True,
        "Allow embeddings_jax's optional compiled CPU kernels (embeddings_jax.kernels).",
        include_in_jit_key=True,
        include_in_trace_context=True,
    )

    def checks_enabled() -> bool:
        """Whether traced calls emit ``checkify`` checks (inside :func:`checked`)."""
        return bool(_CHECKS.value)

    def kernels_enabled() -> bool:
        """Whether the compiled kernels may be used by computations traced now."""
        return bool(_KERNELS.value)

    def enable_checks(on: bool = True) -> contextlib.AbstractContextManager:
        return _CHECKS(on)

    def set_kernels(on: bool) -> contextlib.AbstractContextManager:
        return _KERNELS(on)

except (ImportError, AttributeError, TypeError):  # pragma: no cover - a future JAX
    # Fallback: context variables. A function jitted (and traced) before the switch
    # changed keeps its first trace; the docs of `checked` say so.
    _checks_var = contextvars.ContextVar("embeddings_jax_checks", default=False)
    _kernels_var = contextvars.ContextVar("embeddings_jax_kernels", default=True)

    def checks_enabled() -> bool:
        return _checks_var.get()

    def kernels_enabled() -> bool:
        return _kernels_var.get()

    @contextlib.contextmanager
    def _set(var: contextvars.ContextVar, value: bool) -> Iterator[None]:
        token = var.set(value)
        try:
            yield
        finally:
            var.reset(token)

    def enable_checks(on: bool = True) -> contextlib.AbstractContextManager:
        return _set(_checks_var, on)

    def set_kernels(on: bool) -> contextlib.AbstractContextManager:
        return _set(_kernels_var, on)
