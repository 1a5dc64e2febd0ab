"""The docs cover the public API, and the README stays short.

These read files only (no Sphinx build): `.ci/run` builds the site with `-W`.
"""

from __future__ import annotations

import importlib
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
API = ROOT / "docs" / "api"

# Each public module and the API page that documents its ``__all__``.
PAGES = {
    "embeddings_jax": "functional.md",
    "embeddings_jax.linen": "linen.md",
    "embeddings_jax.nnx": "nnx.md",
}

# ``.. autofunction:: embeddings_jax.embed`` (inside ```{eval-rst} blocks) or the MyST
# form ```{autofunction} embeddings_jax.embed
_DIRECTIVE = re.compile(
    r"^\s*(?:\.\.\s+(?:py:)?(?P<rst>auto\w+|function|class|data|attribute)::"
    r"|```\{(?:py:)?(?P<myst>auto\w+|function|class|data|attribute)\})"
    r"\s*(?P<target>[\w.]+)",
    re.MULTILINE,
)


def documented(page: pathlib.Path) -> list[str]:
    """Full dotted names of the objects a page documents with directives."""
    return [m.group("target") for m in _DIRECTIVE.finditer(page.read_text())]


def split(target: str) -> tuple[str, str]:
    """``embeddings_jax.linen.TokenEmbed.attend`` -> (``embeddings_jax.linen``, ``TokenEmbed``)."""
    for module in sorted(PAGES, key=len, reverse=True):
        if target.startswith(module + "."):
            return module, target[len(module) + 1 :].split(".")[0]
    return "", target


@pytest.mark.parametrize("module", sorted(PAGES))
def test_every_public_name_is_in_the_api_reference(module):
    page = API / PAGES[module]
    names = {name for mod, name in map(split, documented(page)) if mod == module}
    missing = sorted(set(importlib.import_module(module).__all__) - names)
    assert not missing, (
        f"docs/api/{PAGES[module]} must document every name of {module}.__all__; add an "
        f"autofunction/autoclass/autodata directive (full dotted name) for: {missing}"
    )


def test_api_reference_names_are_public():
    """Every directive names a public object, so a rename cannot leave a stale entry."""
    for page in sorted(API.glob("*.md")):
        for target in documented(page):
            module, name = split(target)
            if not module:
                continue  # another module's page (e.g. a future embeddings_jax.kernels)
            public = importlib.import_module(module).__all__
            assert name in public, f"{page.relative_to(ROOT)} documents {target}, not public"


def test_directive_parser_reads_both_syntaxes(tmp_path):
    page = tmp_path / "x.md"
    page.write_text(
        "```{eval-rst}\n.. autofunction:: embeddings_jax.embed\n"
        "   :no-index:\n\n.. autoclass:: embeddings_jax.linen.TokenEmbed\n   :members:\n```\n"
        "```{autodata} embeddings_jax.CONVENTIONS\n```\n"
    )
    assert documented(page) == [
        "embeddings_jax.embed",
        "embeddings_jax.linen.TokenEmbed",
        "embeddings_jax.CONVENTIONS",
    ]
    assert split("embeddings_jax.linen.TokenEmbed.attend") == ("embeddings_jax.linen", "TokenEmbed")
    assert split("embeddings_jax.embed") == ("embeddings_jax", "embed")


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move details into docs/"


def test_license_is_present():
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0" in text


def test_readme_and_docs_links_resolve():
    """Relative links in README.md, CONTRIBUTING.md and the moved reports point to files."""
    pages = [ROOT / "README.md", ROOT / "CONTRIBUTING.md"]
    pages += [p for p in (ROOT / "benchmarks").glob("*.md")]
    pages += [p for p in (ROOT / "experiments").rglob("*.md")]
    for page in pages:
        if not page.exists():
            continue
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
        for link in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", link) or link.startswith("#"):
                continue
            path = (page.parent / link.split("#")[0]).resolve()
            assert path.exists(), f"{page.relative_to(ROOT)} links to missing {link}"
