"""Sphinx configuration of the rrise-sklearn documentation."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "rrise-sklearn"
author = "rrise-sklearn developers"
copyright = "2026, rrise-sklearn developers"  # noqa: A001
release = "0.1.0.dev0"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]
autosummary_generate = True
autodoc_default_options = {
    "members": True,
    "inherited-members": False,
    "exclude-members": "set_fit_request, set_partial_fit_request, set_score_request, "
    "set_predict_request, set_predict_proba_request, set_conformalize_request",
}
numpydoc_show_class_members = False
numpydoc_validation_checks: set = set()
exclude_patterns = [
    "_build",
    "auto_examples/*.ipynb",
    "auto_examples/*.py",
    "auto_examples/*.zip",
    "auto_examples/*.md5",
    "auto_examples/*.json",
]
html_theme = "alabaster"
suppress_warnings = ["config.cache"]

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"plot_",
    "download_all_examples": False,
    "remove_config_comments": True,
    "plot_gallery": os.environ.get("RRISE_DOCS_RUN_EXAMPLES", "1") == "1",
}
