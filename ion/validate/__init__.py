"""Semantic validation of ION definitions: every rule, every problem, each with its location.

``validate_ion`` checks a definition (names, engines, component types and arguments, input
bindings, the DAG of each pipeline, edge kinds against their ends, policies, schedules,
placement against an optional inventory) and reports cycles across the ION as information.
``validate_text`` / ``validate_file`` add the schema problems of the YAML in the same report.
"""

from __future__ import annotations

from ion.validate.core import validate_file, validate_ion, validate_parsed, validate_text
from ion.validate.inventory import (
    InvalidInventoryError,
    Inventory,
    InventoryNode,
    load_inventory,
    load_inventory_file,
)
from ion.validate.report import ValidationReport

__all__ = [
    "InvalidInventoryError",
    "Inventory",
    "InventoryNode",
    "ValidationReport",
    "load_inventory",
    "load_inventory_file",
    "validate_file",
    "validate_ion",
    "validate_parsed",
    "validate_text",
]
