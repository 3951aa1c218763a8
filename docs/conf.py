"""Sphinx configuration of the API reference (``sphinx-build -W -b html docs docs/_build``).

The reference is generated from the docstrings (autodoc, Google style through napoleon);
``tests/docs/test_docs.py`` builds it with warnings as errors and runs the tutorial.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

project = "containers-storage for Python"
author = "containers-storage for Python contributors"
copyright = "the containers-storage for Python contributors"
release = "0.1.0"

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]
exclude_patterns = ["_build", "*.md"]  # the .md files are design notes, not pages
root_doc = "index"

autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "signature"
autoclass_content = "class"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # "Attributes:" as fields, not directives that autodoc would repeat
napoleon_use_rtype = False

html_theme = "alabaster"
html_title = project
