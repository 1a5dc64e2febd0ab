"""Builds the optional XLA:CPU kernels; all other metadata is in pyproject.toml.

The extension is ``optional``: without a C++17 compiler (or without jaxlib's FFI
headers) the install still succeeds and ``embeddings_jax`` uses its pure-XLA
formulation (``embeddings_jax.kernels.status()`` says which). The XLA FFI headers come
from the installed jaxlib (``jax.ffi.include_dir()``), as in jax's own FFI examples;
``jax`` is therefore in ``build-system.requires``.
"""

import sys

from setuptools import Extension, setup

CSRC = "embeddings_jax/_src/kernels/csrc"

try:
    import jax.ffi

    headers = jax.ffi.include_dir()
except Exception as e:  # noqa: BLE001 - no headers: skip the optional extension
    print(f"embeddings-jax: not building the CPU kernels (no XLA FFI headers: {e})")
    headers = None

if sys.platform == "win32":
    extra = ["/O2", "/std:c++17"]
    include_dirs = [headers]
else:
    # No FMA contraction: every instruction-set variant then rounds identically.
    # jaxlib's headers as system headers: their own warnings are not ours.
    extra = ["-O3", "-std=c++17", "-ffp-contract=off", "-isystem", str(headers)]
    include_dirs = []

ext_modules = []
if headers is not None:
    ext_modules.append(
        Extension(
            "embeddings_jax._src.kernels._cpu_kernels",
            sources=[f"{CSRC}/cpu_kernels.cc"],
            include_dirs=include_dirs,
            depends=[f"{CSRC}/rows.inc"],
            extra_compile_args=extra,
            language="c++",
            optional=True,
        )
    )

setup(ext_modules=ext_modules)
