"""What the linen and NNX front ends share: fields and method wrappers from a spec.

A front-end class is declared as ``class TokenEmbed(LinenModule, spec=spec.TokenEmbed)``:
the class receives the spec's attributes (names, order, defaults), its documentation
and one method per entry of ``spec.METHODS``, whose signature is the spec method's
without the ``frame`` argument.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
from collections.abc import Callable
from typing import Any

import jax
from flax.core import spmd as core_spmd
from jax.sharding import NamedSharding, PartitionSpec

from embeddings_jax._src.modules.spec import ModuleSpec

__all__ = ["default", "fields", "front", "method_wrapper", "place_on_mesh", "spec_of"]


def fields(spec: type[ModuleSpec], framework: str) -> list[dataclasses.Field]:
    """The spec's attributes a front end of ``framework`` has, in order."""
    others = {k: v for k, v in spec.ONLY.items() if k != framework}
    skip = {name for names in others.values() for name in names}
    return [f for f in dataclasses.fields(spec) if f.name not in skip]


def default(spec: type[ModuleSpec], f: dataclasses.Field, framework: str) -> Any:
    """The default of attribute ``f`` in ``framework`` (``dataclasses.MISSING``: none):
    the framework's own (``spec.DEFAULTS``) or the spec's."""
    return spec.DEFAULTS.get(framework, {}).get(f.name, f.default)


def front(base: type, spec: type[ModuleSpec]) -> type:
    """The front-end class of ``spec`` for the framework of ``base``, named after it."""
    return types.new_class(
        spec.__name__,
        (base,),
        {"spec": spec},
        lambda ns: ns.update(__module__=base.__module__, __qualname__=spec.__name__),
    )


def spec_of(obj: Any, spec: type[ModuleSpec], framework: str) -> ModuleSpec:
    """The spec built (and so validated) from a front-end object's attributes (an NNX
    constructor argument that is not kept, ``spec.NNX_INIT_ONLY``, takes its default)."""
    skip = spec.NNX_INIT_ONLY if framework == "nnx" else ()
    names = [f.name for f in fields(spec, framework) if f.name not in skip]
    return spec(**{name: getattr(obj, name) for name in names})


def method_wrapper(spec: type[ModuleSpec], name: str, call: Callable) -> Callable:
    """A front-end method ``name`` that runs ``call(self, spec_method, *args, **kwargs)``.

    It carries the spec method's documentation and signature (without ``frame``), so
    ``help()``, ``inspect.signature`` and the API reference show the real arguments.
    """
    target = getattr(spec, name)

    def method(self, *args, **kwargs):
        return call(self, target, *args, **kwargs)

    sig = inspect.signature(target)
    params = list(sig.parameters.values())
    method.__signature__ = sig.replace(parameters=[params[0], *params[2:]])
    method.__name__ = name
    method.__doc__ = target.__doc__
    method.__annotations__ = {
        k: v for k, v in getattr(target, "__annotations__", {}).items() if k != "frame"
    }
    return method


def mesh_spec(axes: tuple[str | None, ...] | None, mesh) -> PartitionSpec:
    """Logical axis names resolved to the mesh: through the logical-axis rules in force
    (``flax.linen.logical_axis_rules``), a name that is a mesh axis stays, and any
    other name is replicated (``None``), the way ``nnx.Embed`` builds under any mesh."""
    if not axes:
        return PartitionSpec()
    rules = dict(core_spmd.get_logical_axis_rules())
    out = []
    for a in axes:
        target = rules.get(a, a) if a is not None else None
        names = (target,) if isinstance(target, str) else tuple(target or ())
        ok = names and all(n in mesh.axis_names for n in names)
        out.append(target if ok else None)
    return PartitionSpec(*out)


def place_on_mesh(value, axes: tuple[str | None, ...] | None):
    """``value`` placed on the mesh in force (``jax.set_mesh``), if any, as its logical
    axes resolve there (:func:`mesh_spec`); unchanged without a mesh."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh is None or mesh.empty or axes is None:
        return value
    spec = mesh_spec(axes, mesh)
    if all(getattr(t, "name", str(t)).endswith("Explicit") for t in mesh.axis_types):
        return jax.sharding.reshard(value, spec)
    if isinstance(value, jax.core.Tracer):
        return jax.lax.with_sharding_constraint(value, spec)
    concrete = jax.sharding.get_mesh() if hasattr(jax.sharding, "get_mesh") else None
    if concrete is None or getattr(concrete, "empty", True):
        return value
    return jax.device_put(value, NamedSharding(concrete, spec))
