"""Load JSON/YAML workflows, validate them, and build the plain typed model.

Knows nothing about running. Node types are known here only as data handed in
by the caller (their declared params), never by importing node modules.
"""

from plait.ir.loader import load_file, load_text
from plait.ir.model import BatchSpec, Edge, InputSpec, NodeSpec, OutputSpec, RetrySpec, Workflow
from plait.ir.validate import build_workflow

__all__ = [
    "BatchSpec",
    "Edge",
    "InputSpec",
    "NodeSpec",
    "OutputSpec",
    "RetrySpec",
    "Workflow",
    "build_workflow",
    "load_file",
    "load_text",
]
