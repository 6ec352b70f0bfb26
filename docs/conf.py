"""Sphinx configuration of borch's documentation site (``make docs``)."""

import os
import pathlib
import sys

# No progress bars in the tutorials' output (tqdm reads this when it is imported).
os.environ["TQDM_DISABLE"] = "1"
DOCS = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))

import api_pages  # noqa: E402
import borch_gallery  # noqa: E402
import offline_intersphinx  # noqa: E402

import borch  # noqa: E402

project = "borch"
author = "borch developers"
copyright = "borch developers"
release = borch.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = [
    "_build",
    "_gallery_src",
    "seed",
    "README.md",
    "_ext",
    "gallery_header.rst",
]
html_theme = "furo"
html_title = f"borch {release}"

# The API pages: one per public (sub)package, each listing its ``__all__``.
api_pages.write(DOCS / "api", api_pages.PACKAGES)
autosummary_generate = True
autosummary_ignore_module_all = False
autodoc_default_options = {"show-inheritance": True}
autodoc_typehints = "description"
autodoc_member_order = "bysource"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# Cross-links to torch and ArviZ. The inventories are fetched once into
# _build/inventories; a build without network leaves the links out instead of failing.
intersphinx_mapping = offline_intersphinx.mapping(
    {
        "python": "https://docs.python.org/3/",
        "torch": "https://docs.pytorch.org/docs/stable/",
        "arviz": "https://python.arviz.org/en/stable/",
    },
    DOCS / "_build" / "inventories",
)

# The tutorials: examples/*.py, executed, with the seed tutorial's page assembled
# from its prose (docs/seed/posteriors.txt) and examples/posteriors.py verbatim.
borch_gallery.prepare_sources(DOCS)
sphinx_gallery_conf = {
    "examples_dirs": ["_gallery_src"],
    "gallery_dirs": ["tutorials"],
    "filename_pattern": borch_gallery.EXECUTED,
    "within_subsection_order": "borch_gallery.TutorialOrder",
    "reset_argv": "borch_gallery.docs_arguments",
    "reset_modules": ("matplotlib", "borch_gallery.seed_torch"),
    "image_scrapers": ("matplotlib", "borch_gallery.results_scraper"),
    "abort_on_example_error": False,
    "only_warn_on_example_error": False,
    "download_all_examples": False,
    "min_reported_time": 0,
    "show_memory": False,
}

html_static_path = ["_static"]
html_css_files = ["borch.css"]
