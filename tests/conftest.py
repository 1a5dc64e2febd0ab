"""Test configuration: strict promotion, 8 CPU devices, a PRNG key, jit/eager variants."""

import os

# Several host devices for the sharding tests; must be set before jax initialises.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

try:  # hypothesis profiles: CI is derandomized and small.
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "ci",
        derandomize=True,
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        print_blob=True,
    )
    settings.register_profile("dev", max_examples=100, deadline=None)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # pragma: no cover
    pass


@pytest.fixture
def key():
    return jax.random.key(0)


@pytest.fixture(params=["eager", "jit"])
def maybe_jit(request):
    """Run a function eagerly or under ``jax.jit`` (tests must pass both ways)."""
    if request.param == "jit":
        return jax.jit
    return lambda f, **kw: f


def slow_scale() -> float:
    """Size multiplier for ``@pytest.mark.slow`` tests (CI runs them reduced)."""
    return float(os.environ.get("EJ_SLOW_SCALE", "1.0"))
