"""Declarative schema mapping: provider entity → canonical model → consumer schema."""

from connectors.mapping.canonical import canonical_models, canonical_schema, classification_of
from connectors.mapping.compiler import (
    CompiledMapping,
    compile_mapping,
    load_mapping,
    validate_spec,
)

__all__ = [
    "CompiledMapping",
    "canonical_models",
    "canonical_schema",
    "classification_of",
    "compile_mapping",
    "load_mapping",
    "validate_spec",
]
