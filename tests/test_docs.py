from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
DOCUMENTED = ["io", "pp", "tl", "pl", "datasets", "metrics"]


@pytest.mark.parametrize("module", DOCUMENTED)
def test_every_public_name_is_in_the_api_page(module):
    api = (DOCS / "api.md").read_text()
    mod = importlib.import_module(f"c2lst.{module}")
    missing = [name for name in mod.__all__ if f"{module}.{name}\n" not in api]
    assert not missing, f"add {missing} to docs/api.md"


def test_toctree_includes_design_and_tutorials():
    index = (DOCS / "index.md").read_text()
    assert "\ndesign\n" in index
    for nb in sorted((ROOT / "tutorials").glob("*.ipynb")):
        assert f"generated/tutorials/{nb.stem}\n" in index


@pytest.mark.slow
def test_sphinx_build_has_no_warnings(tmp_path):
    pytest.importorskip("sphinx", reason="docs dependencies missing: pip install 'c2lst[docs]'")
    pytest.importorskip("myst_nb", reason="docs dependencies missing: pip install 'c2lst[docs]'")
    pytest.importorskip("sphinx_book_theme", reason="docs dependencies missing: pip install 'c2lst[docs]'")
    pytest.importorskip("numpydoc", reason="docs dependencies missing: pip install 'c2lst[docs]'")
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "-d",
                           str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert (tmp_path / "html" / "generated" / "c2lst.tl.run.html").exists()
    quickstart = (tmp_path / "html" / "generated" / "tutorials" / "01_quickstart.html").read_text()
    assert "mean held-out Pearson r" in quickstart and "_images/" in quickstart  # executed: text and figures


def test_release_files():
    """LICENSE, CITATION.cff, CHANGELOG (and its docs page), py.typed and one version source."""
    import tomllib

    import yaml

    import c2lst

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["dynamic"] == ["version"] and "version" not in pyproject["project"]
    assert pyproject["tool"]["hatch"]["version"]["path"] == "src/c2lst/__init__.py"
    assert f'__version__ = "{c2lst.__version__}"' in (ROOT / "src" / "c2lst" / "__init__.py").read_text()
    assert "BSD 3-Clause" in (ROOT / "LICENSE").read_text() and pyproject["project"]["license"] == "BSD-3-Clause"
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["version"] == c2lst.__version__ and "2603.26827" in str(cff["preferred-citation"])
    assert any(ref.get("doi") == "10.1038/s41467-021-26271-2" for ref in cff["references"])  # her2st data
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog and f"## [{c2lst.__version__}]" in changelog
    assert "../CHANGELOG.md" in (DOCS / "changelog.md").read_text() and "\nchangelog\n" in (DOCS / "index.md").read_text()
    assert (ROOT / "src" / "c2lst" / "py.typed").exists()
    urls = pyproject["project"]["urls"]
    assert all(u.startswith("https://") and "example" not in u for u in urls.values())
    assert "bash .ci/run" in (ROOT / ".github" / "workflows" / "ci.yml").read_text()
    assert yaml.safe_load((ROOT / ".readthedocs.yaml").read_text())["sphinx"]["configuration"] == "docs/conf.py"
