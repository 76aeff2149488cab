"""ocb: backup and restore of an OpenClaw agent's state to a Hugging Face dataset repo or a folder.

This package holds the logic; bin/ocb-* are thin launchers into ocb.cli.
"""

__version__ = "0.1.0"

# Major version of the document contract between stages (DESIGN.md, "The document").
DOC_VERSION = 1
