"""Flax NNX front ends over the module specs (:mod:`.spec`).

Each class is one line: it takes its attributes, documentation and methods from its
spec; :class:`NnxModule` makes the constructor (the spec's attributes, then ``rngs``),
creates the spec's parameters as ``nnx.Param`` (logical axis names as sharding
metadata, placed on the mesh in force), the decode cache as an ``nnx.Cache`` and an
``nnx.Dropout``, and runs the spec's methods.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import jax.numpy as jnp
from flax import nnx

from embeddings_jax._src.modules import spec as S
from embeddings_jax._src.modules.frontend import (
    default,
    fields,
    front,
    method_wrapper,
    place_on_mesh,
    spec_of,
)


class _Group(nnx.Module):
    """A named sub-collection of parameters (``token_embed``, ``norm``...)."""


def make_param(rngs: nnx.Rngs, p: S.ParamSpec, **metadata: Any) -> nnx.Param:
    """An ``nnx.Param`` for ``p``: its logical axes as the ``out_sharding`` metadata,
    placed on the mesh in force as those axes resolve there (names the rules do not map
    are replicated, so a module builds under any mesh). A ``p`` with ``nnx_metadata``
    is created the way Flax creates it: ``nnx.Param(value, **nnx_metadata)``."""
    if p.nnx_metadata is not None:
        return nnx.Param(p.init(rngs.params(), p.shape, p.dtype), **p.nnx_metadata, **metadata)
    value = place_on_mesh(p.init(rngs.params(), p.shape, p.dtype), p.axes)
    if p.axes is not None:
        metadata = {"out_sharding": p.axes, **metadata}
    return nnx.Param(value, eager_sharding=False, **metadata)


class _Frame(S.Frame):
    framework = "nnx"

    def __init__(self, module: NnxModule):
        self.m = module

    def param(self, *path):
        obj = self.m
        for name in path:
            obj = getattr(obj, name)
        return obj[...]

    def cache_index(self, create):
        cache = getattr(self.m, "cache_index", None)
        if cache is None:
            raise ValueError(
                f"{type(self.m).__name__}: decode=True needs the cache `cache_index`: construct "
                f"the module with decode=True or call init_cache() first, got no cache"
            )
        return _CacheRef(cache)

    def dropout(self, x, rate, deterministic):
        return self.m.dropout(x, deterministic=deterministic)


class _CacheRef:
    def __init__(self, var):
        self.var = var

    @property
    def value(self):
        return self.var[...]

    @value.setter
    def value(self, v):
        self.var[...] = v


class NnxModule(nnx.Module):
    """Base of the NNX front ends: ``class X(NnxModule, spec=spec.X)``."""

    def __init_subclass__(cls, spec: type[S.ModuleSpec] | None = None, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if spec is None:
            return
        cls._spec_cls = spec
        cls.__doc__ = spec.__doc__
        for name in spec.METHODS:
            setattr(cls, name, method_wrapper(spec, name, NnxModule._run))
        # The constructor's signature: the spec's attributes (the first NNX_POSITIONAL
        # positional-or-keyword, the rest keyword-only) and `rngs` (keyword-only, last
        # or before the attribute NNX_RNGS_BEFORE, as Flax places it).
        fs = fields(spec, "nnx")
        k = len(fs) if spec.NNX_POSITIONAL is None else spec.NNX_POSITIONAL
        params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        rngs = inspect.Parameter(
            "rngs", inspect.Parameter.KEYWORD_ONLY, default=None, annotation="nnx.Rngs"
        )
        for i, f in enumerate(fs):
            if f.name == spec.NNX_RNGS_BEFORE:
                params.append(rngs)
            kind = (
                inspect.Parameter.POSITIONAL_OR_KEYWORD if i < k else inspect.Parameter.KEYWORD_ONLY
            )
            value = default(spec, f, "nnx")
            value = inspect.Parameter.empty if value is dataclasses.MISSING else value
            params.append(inspect.Parameter(f.name, kind, default=value, annotation=f.type))
        if spec.NNX_RNGS_BEFORE is None:
            params.append(rngs)
        init_signature = inspect.Signature(params)
        cls.__signature__ = init_signature.replace(parameters=params[1:])

        def __init__(self, *args, rngs: nnx.Rngs | None = None, **kwargs):
            bound = init_signature.bind(self, *args, rngs=rngs, **kwargs)
            bound.apply_defaults()  # this framework's defaults (spec.DEFAULTS)
            attrs = {n: v for n, v in bound.arguments.items() if n not in ("self", "rngs")}
            NnxModule._build(self, spec(**attrs), rngs)

        __init__.__signature__ = init_signature
        __init__.__doc__ = f"Build a {cls.__name__}; see the class documentation."
        cls.__init__ = __init__
        if spec.DECODES:
            cls.init_cache = NnxModule._init_cache
            cls.reset_cache = NnxModule._init_cache

    def _build(self, s: S.ModuleSpec, rngs: nnx.Rngs | None) -> None:
        fn = type(self).__name__
        if s.needs_rngs() and (s.params() or s.dropout_rate_() > 0) and rngs is None:
            raise TypeError(
                f"{fn}: `rngs` must be an nnx.Rngs (it initialises parameters), got None"
            )
        values = {}
        for p in s.params():
            owner = self
            if len(p.path) == 2:
                if not hasattr(self, p.path[0]):
                    setattr(self, p.path[0], _Group())
                owner = getattr(self, p.path[0])
            param = make_param(rngs, p)
            values[p.path] = param[...]
            setattr(owner, p.path[-1], param)
        resolved = s.nnx_resolved(values)
        for f in fields(type(s), "nnx"):
            if f.name not in s.NNX_INIT_ONLY:
                setattr(self, f.name, resolved.get(f.name, getattr(s, f.name)))
        if s.has_cache():
            self.cache_index = nnx.Cache(jnp.zeros((), jnp.int32))
        if s.dropout_rate_() > 0:
            self.dropout = nnx.Dropout(s.dropout_rate_(), rngs=rngs)

    def _run(self, target, *args, **kwargs):
        return target(spec_of(self, self._spec_cls, "nnx"), _Frame(self), *args, **kwargs)

    def _init_cache(self) -> None:
        """Create (or reset) the decode cache and set ``decode=True``: the next call starts
        at position 0. A module built with ``decode=True`` has a cache already."""
        self.cache_index = nnx.Cache(jnp.zeros((), jnp.int32))
        self.decode = True


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
) = (front(NnxModule, s) for s in S.SPECS)
