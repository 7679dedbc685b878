"""FER-SSL Workbench: self-supervised facial-expression representations, end to end.

The library does the work; the CLI (``workbench ...``) and the notebooks are thin views over it.
"""

__version__ = "0.1.0"
