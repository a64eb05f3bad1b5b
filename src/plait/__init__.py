"""plait: a workflow engine whose headline is batch processing.

Kept import-free on purpose: `plait --version` reads only this module.
"""

__version__ = "0.1.0"
