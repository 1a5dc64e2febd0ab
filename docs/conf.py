"""Sphinx configuration for the embeddings-jax documentation.

Build (warnings are errors, as in CI):

    sphinx-build -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import ast
import inspect
import os
import re
import sys
import textwrap

# Document the checkout this file belongs to, not whatever is installed.
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

import flax.linen  # noqa: E402
import flax.nnx  # noqa: E402
from docutils import nodes  # noqa: E402

import embeddings_jax  # noqa: E402

project = "embeddings-jax"
author = "The embeddings-jax Authors"
copyright = "2026, The embeddings-jax Authors"
release = embeddings_jax.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# --- autodoc -------------------------------------------------------------------------
autodoc_member_order = "bysource"
# Only our own docstrings: linen modules would otherwise show flax's Module.setup text.
autodoc_inherit_docstrings = False
autodoc_class_signature = "mixed"

# Signatures show argument names and defaults only; each argument's type (a jaxtyping
# shape such as Float[Array, "vocab features"]) is listed next to its description,
# where the brackets read better than in a one-line signature.
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_preserve_defaults = True
add_module_names = False
python_display_short_literal_types = True
# Show the aliases of embeddings_jax._src.typing by name (not as Any or Callable[...]).
autodoc_type_aliases = {"Dtype": "Dtype", "Initializer": "Initializer", "PRNGKey": "PRNGKey"}

# --- napoleon (Google style) -----------------------------------------------------------
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_include_init_with_doc = False
napoleon_use_rtype = False
napoleon_use_ivar = True

# --- MyST ------------------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# --- HTML --------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"embeddings-jax {release}"
html_static_path: list[str] = []


def _drop_builtin_type_docs(app, what, name, obj, options, lines):
    """Constants (``autodata``) have no docstring of their own; autodoc would show
    the docstring of their type (``dict``, ``tuple``, ``int``). The directive body
    documents them instead."""
    if what == "data" and lines and type(obj).__module__ == "builtins":
        lines.clear()


def _short_array_names(app, domain, objtype, contentnode):
    """Types as the source writes them: jaxtyping names its shapes after the array
    class's full path (``Float[jaxlib._jax.Array, ...]``), and annotations resolved
    across modules show private paths (``embeddings_jax._src.sinusoidal.X``)."""
    for node in list(contentnode.findall(nodes.Text)):
        short = _PRIVATE.sub("", _JAX_ARRAY.sub("Array", node))
        if short != node:
            node.parent.replace(node, nodes.Text(short))


_JAX_ARRAY = re.compile(r"\bjaxlib(?:\.\w+)*\.Array\b")  # jaxlib._jax.Array in jax 0.10
_PRIVATE = re.compile(r"\bembeddings_jax\._src(?:\.\w+)*\.(?=[A-Z])")  # class paths


def _default_sources(cls) -> dict[str, str]:
    """Defaults of a module's constructor as written in the source (``jnp.float32``,
    ``default_embed_init``), not as their reprs (``<class 'jax.numpy.float32'>``)."""
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not klass.__module__.startswith("embeddings_jax"):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
            body = ast.parse(source).body[0].body
        except (OSError, TypeError, SyntaxError, IndexError, AttributeError):
            continue  # a class made at run time: fall back to "..."
        for node in body:
            if isinstance(node, ast.AnnAssign) and node.value is not None:  # linen fields
                found[node.target.id] = ast.get_source_segment(source, node.value)
            if isinstance(node, ast.FunctionDef) and node.name == "__init__":  # NNX
                args = node.args
                positional = args.posonlyargs + args.args
                named = positional[len(positional) - len(args.defaults) :]
                pairs = list(zip(named, args.defaults, strict=True))
                pairs += [
                    (a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d
                ]
                for arg, default in pairs:
                    found[arg.arg] = ast.get_source_segment(source, default)
    return found


def _module_signature(app, what, name, obj, options, signature, return_annotation):
    """Constructor signatures of the Flax modules.

    linen modules are dataclasses whose generated ``__init__`` ends in Flax's own
    ``parent`` and ``name``; NNX modules' metaclass hides ``__init__`` behind
    ``(*args, **kwargs)``. Show the arguments a user passes, with source defaults.
    """
    if what != "class" or not isinstance(obj, type):
        return None
    if issubclass(obj, flax.linen.Module):
        params = list(inspect.signature(obj).parameters.values())
        params = [p for p in params if p.name not in ("parent", "name")]
    elif issubclass(obj, flax.nnx.Module):
        params = list(inspect.signature(obj.__init__).parameters.values())[1:]
    else:
        return None
    defaults = _default_sources(obj)
    parts, star = [], False
    for p in params:
        if p.kind is p.VAR_POSITIONAL:
            parts.append(f"*{p.name}")
            star = True
            continue
        if p.kind is p.VAR_KEYWORD:
            parts.append(f"**{p.name}")
            continue
        if p.kind is p.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        if p.default is p.empty:
            parts.append(p.name)
        elif isinstance(p.default, (str, int, float, tuple, type(None))):
            parts.append(f"{p.name}={p.default!r}")  # values, not private constant names
        else:
            parts.append(f"{p.name}={defaults.get(p.name, '...')}")
    return f"({', '.join(parts)})", None


def setup(app):
    app.connect("autodoc-process-docstring", _drop_builtin_type_docs)
    app.connect("autodoc-process-signature", _module_signature)
    # After sphinx.ext.autodoc.typehints has written the types (priority 500).
    app.connect("object-description-transform", _short_array_names, priority=600)
