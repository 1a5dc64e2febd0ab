"""`embeddings-jax plot` writes non-blank PNGs with the expected names."""

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.image  # noqa: E402
import pytest  # noqa: E402

from embeddings_jax.tools import plot as plotting  # noqa: E402


def _args(out, *extra):
    p = argparse.ArgumentParser()
    plotting.add_arguments(p)
    return p.parse_args(["--out", str(out), "--small", "--dpi", "50", *extra])


def _check_png(path):
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and min(img.shape[:2]) > 100
    assert img[..., :3].std() > 0.02, f"{path} looks blank"


def test_plot_writes_every_figure(tmp_path, capsys):
    assert plotting.main(_args(tmp_path)) == 0
    written = sorted(p.stem for p in tmp_path.glob("*.png"))
    assert written == sorted(plotting.FIGURES) and len(written) >= 4
    for name in written:
        _check_png(tmp_path / f"{name}.png")
    assert capsys.readouterr().out.count("wrote ") == len(written)


def test_only_selects_figures(tmp_path):
    plotting.main(_args(tmp_path, "--only", "sinusoid_tables"))
    assert [p.name for p in tmp_path.iterdir()] == ["sinusoid_tables.png"]


def test_unknown_figure_is_rejected(tmp_path):
    with pytest.raises(SystemExit):
        _args(tmp_path, "--only", "nope")


def test_readme_pictures_exist():
    """Every docs/figures picture the README links to is committed and not blank."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1]
    figures = sorted((root / "docs" / "figures").glob("*.png"))
    assert len(figures) >= 2
    for path in figures:
        _check_png(path)
    readme = root / "README.md"
    text = readme.read_text() if readme.exists() else ""
    links = re.findall(r"(docs/figures/[\w.-]+\.png)", text)
    for link in links:
        assert (root / link).exists(), f"README links to missing {link}"
