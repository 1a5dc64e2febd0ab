"""Builds the optional XLA:CPU kernel; all other metadata is in pyproject.toml.

The extension is ``optional``: without a C++17 compiler the install still succeeds
and ``embeddings_jax`` uses its pure-XLA formulation (``ej.cpu_kernel_status()``).
"""

import sys

from setuptools import Extension, setup

CSRC = "embeddings_jax/_src/csrc"

if sys.platform == "win32":
    extra = ["/O2", "/std:c++17"]
else:
    # No FMA contraction: every instruction-set variant then rounds identically.
    extra = ["-O3", "-std=c++17", "-ffp-contract=off"]

setup(
    ext_modules=[
        Extension(
            "embeddings_jax._cpu_kernels",
            sources=[f"{CSRC}/fused_layer_norm.cc"],
            include_dirs=[CSRC],
            depends=[
                f"{CSRC}/rows.inc",
                f"{CSRC}/xla/ffi/api/api.h",
                f"{CSRC}/xla/ffi/api/c_api.h",
                f"{CSRC}/xla/ffi/api/ffi.h",
            ],
            extra_compile_args=extra,
            language="c++",
            optional=True,
        )
    ]
)
