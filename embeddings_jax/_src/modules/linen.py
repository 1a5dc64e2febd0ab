"""Flax linen front ends over the module specs (:mod:`.spec`).

Each class is one line: it takes its attributes, documentation and methods from its
spec; :class:`LinenModule` creates the spec's parameters (boxed with their logical axis
names, or plain), the decode cache in the ``"cache"`` collection and a ``nn.Dropout``,
and runs the spec's methods.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from embeddings_jax._src.modules import spec as S
from embeddings_jax._src.modules.frontend import default, fields, front, method_wrapper, spec_of


class _Group(nn.Module):
    """A named sub-collection of parameters (``token_embed``, ``norm``...)."""

    specs: tuple[S.ParamSpec, ...]

    def setup(self):
        self.values = {p.path[-1]: _param(self, p) for p in self.specs}

    def __call__(self):
        return self.values


def _param(module: nn.Module, p: S.ParamSpec):
    init = p.init if p.axes is None else nn.with_logical_partitioning(p.init, p.axes)
    return module.param(p.path[-1], init, p.shape, p.dtype)


class _Frame(S.Frame):
    framework = "linen"

    def __init__(self, module: LinenModule):
        self.m = module

    def param(self, *path):
        if len(path) == 1:
            return self.m._own[path[0]]
        return getattr(self.m, path[0])()[path[1]]

    def cache_index(self, create):
        return self.m._cache if self.m._cache_ready else None

    def dropout(self, x, rate, deterministic):
        return self.m._dropout(x, deterministic=deterministic)


class LinenModule(nn.Module):
    """Base of the linen front ends: ``class X(LinenModule, spec=spec.X)``."""

    def __init_subclass__(cls, spec: type[S.ModuleSpec] | None = None, **kwargs: Any):
        if spec is not None:
            cls._spec_cls = spec
            cls.__doc__ = spec.__doc__
            ann = dict(cls.__dict__.get("__annotations__", {}))
            for f in fields(spec, "linen"):
                ann[f.name] = f.type
                value = default(spec, f, "linen")
                if value is not dataclasses.MISSING:
                    setattr(cls, f.name, value)
            cls.__annotations__ = ann
            for name in spec.METHODS:
                setattr(cls, name, method_wrapper(spec, name, LinenModule._run))
        super().__init_subclass__(**kwargs)

    def __post_init__(self):
        # Validate at construction, as the NNX front end does (and again in setup).
        if hasattr(type(self), "_spec_cls"):
            spec_of(self, self._spec_cls, "linen")
        super().__post_init__()

    def setup(self):
        s = spec_of(self, self._spec_cls, "linen")
        own, groups = {}, {}
        for p in s.params():
            if len(p.path) == 1:
                own[p.path[0]] = _param(self, p)
            else:
                groups.setdefault(p.path[0], []).append(p)
        self._own = own
        for name, specs in groups.items():
            setattr(self, name, _Group(tuple(specs), name=name))
        if s.has_cache():
            # As the Flax examples: the index is not advanced while the cache is created.
            self._cache_ready = self.has_variable("cache", "cache_index")
            self._cache = self.variable("cache", "cache_index", lambda: jnp.zeros((), jnp.int32))
        else:
            self._cache_ready = False
        if s.dropout_rate_() > 0:
            self._dropout = nn.Dropout(rate=s.dropout_rate_(), name="dropout")

    def _run(self, target, *args, **kwargs):
        return target(spec_of(self, self._spec_cls, "linen"), _Frame(self), *args, **kwargs)


# One front end per spec, named after it (tests/test_modules.py checks the names).
(
    TokenEmbed,
    Embed,
    PositionEmbed,
    SinusoidalPositionEmbed,
    TokenAndPositionEmbed,
    RotaryEmbedding,
    ALiBi,
    RelativePositionBias,
    RotaryEmbedding2D,
    TreePositionEmbed,
    KerpleBias,
    FireBias,
) = (front(LinenModule, s) for s in S.SPECS)
