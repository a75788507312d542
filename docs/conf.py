"""Sphinx configuration (scverse template style: myst-nb + sphinx-book-theme + autosummary + numpydoc)."""
from __future__ import annotations

import os
import re
import shutil
import sys
from datetime import date
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))

import c2lst  # noqa: E402
from c2lst.cli import build_parser  # noqa: E402

project = "c2lst"
author = "c2lst developers"
copyright = f"{date.today().year}, {author}"
version = release = c2lst.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
]

# Generated sources (git-ignored): the tutorials copied from ../tutorials and the benchmark page.
GENERATED = HERE / "generated"
(GENERATED / "tutorials").mkdir(parents=True, exist_ok=True)
for nb in sorted((ROOT / "tutorials").glob("*.ipynb")):
    shutil.copyfile(nb, GENERATED / "tutorials" / nb.name)


def _markdown_page(readme: Path, out: Path, name: str, missing: str) -> None:
    """Copy a repository README and the local images it shows (under ``name/``); other local links become text."""
    if not readme.exists():
        out.write_text(missing, encoding="utf-8")
        return
    shown = readme.parent.relative_to(ROOT).as_posix()

    def relink(match: re.Match[str]) -> str:
        bang, text, target = match.group(1), match.group(2), match.group(3)
        if re.match(r"^[a-z]+://|^#", target):
            return match.group(0)
        source = (readme.parent / target).resolve()
        if not (bang and source.is_file()):
            return f"{text} (`{shown}/{target}`)"
        dest = out.parent / name / target
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
        return f"{bang}[{text}]({name}/{target})"

    text = re.sub(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)", relink, readme.read_text(encoding="utf-8"))
    out.write_text(text, encoding="utf-8")


_markdown_page(ROOT / "benchmarks" / "README.md", GENERATED / "benchmarks.md", "benchmarks",
               "# Benchmarks\n\nNo benchmark results yet: run `c2lst benchmark`.\n")
_markdown_page(ROOT / "src" / "c2lst" / "datasets" / "data" / "central_default" / "README.md",
               GENERATED / "central_default.md", "central_default",
               "# Default central model\n\nNot bundled in this checkout: see `scripts/train_central_default.py`.\n")
_parser = build_parser()
_subcommands = next(a for a in _parser._actions if a.dest == "command").choices
(GENERATED / "cli_help.txt").write_text(
    "\n".join([_parser.format_help()] + [f"$ c2lst {name} --help\n{sub.format_help()}" for name, sub in _subcommands.items()]),
    encoding="utf-8",
)

exclude_patterns = ["_build", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}  # .rst: autosummary's stubs
master_doc = "index"

# myst / myst-nb: the tutorials are stored without outputs and executed here, at the test suite's tiny settings
# (C2LST_TUTORIAL_TINY=1, which each notebook's first cell reads and says), about 2 minutes on 2 CPU cores; the
# outputs are cached (jupyter-cache, in _build) so a rebuild re-runs only changed notebooks.
os.environ.setdefault("C2LST_TUTORIAL_TINY", "1")
os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"  # figures as outputs (not Agg from a test run)
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
for _var, _path in (("C2LST_DATA_DIR", ROOT.parent / "shared" / "data" / "her2st"),
                    ("C2LST_HISTOLOGY_DIR", ROOT.parent / "shared" / "data" / "histology")):
    if _path.is_dir():  # the development data, when present next to the checkout (else the tutorials' fallbacks)
        os.environ.setdefault(_var, str(_path))
myst_enable_extensions = ["colon_fence", "deflist", "dollarmath", "amsmath", "html_image"]
myst_heading_anchors = 3
nb_execution_mode = "cache"
nb_execution_cache_path = str(HERE / "_build" / ".jupyter_cache")
nb_execution_timeout = 900
nb_execution_raise_on_error = True
nb_merge_streams = True

# autodoc / autosummary / numpydoc
autosummary_generate = True
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "inherited-members": False, "show-inheritance": False}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks: set[str] = set()
add_module_names = False

html_theme = "sphinx_book_theme"
html_title = "c2lst"
REPOSITORY = "https://github.com/c2lst/c2lst"  # also [project.urls] in pyproject.toml
html_theme_options = {"repository_url": REPOSITORY, "use_repository_button": True, "use_issues_button": True,
                      "repository_branch": "main", "path_to_docs": "docs", "show_toc_level": 2}
html_static_path: list[str] = []
pygments_style = "default"
suppress_warnings = ["mystnb.unknown_mime_type"]
