"""Compile a declarative mapping spec once into plain Python functions.

The spec is validated against ``schemas/mapping.schema.json`` and turned into
a list of (target path, getter) closures; mapping a record is then a loop
over that list with no interpretation left. Only targets named in the spec
are ever written, so unmapped source fields are dropped by construction, and
the output is validated against the target JSON Schema before anyone sees it.
Whatever can be known without a record is checked here: the target schema
itself (``_target_schema``: valid, regexes compile, no reference leaves it),
the step parameters, and the values the spec writes on its own
(``_fixed_values``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from connectors.interface import MappingError
from connectors.mapping._fastcheck import FastCheck, fast_check
from connectors.mapping._fields import Field, apply_fields, compile_fields
from connectors.mapping._fixed_values import verify_fixed_values
from connectors.mapping._target_schema import target_validator, verify_target_schema

__all__ = [
    "MAPPING_SCHEMA",
    "CompiledMapping",
    "compile_mapping",
    "load_mapping",
    "validate_spec",
]

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
MAPPING_SCHEMA = SCHEMAS / "mapping.schema.json"
_spec_validator: jsonschema.Draft202012Validator | None = None


def validate_spec(spec: Any) -> None:
    """Raise ``MappingError`` unless ``spec`` is a valid mapping document."""
    global _spec_validator
    if _spec_validator is None:
        _spec_validator = target_validator(json.loads(MAPPING_SCHEMA.read_text(encoding="utf-8")))
    errors = sorted(_spec_validator.iter_errors(spec), key=lambda e: list(e.absolute_path))
    if errors:
        where = "/".join(str(p) for p in errors[0].absolute_path) or "(root)"
        raise MappingError(f"mapping spec invalid at {where}: {errors[0].message}")


def load_mapping(
    path: str | Path,
    target_schema: Mapping[str, Any] | None = None,
    *,
    schemas_dir: Path | None = None,
) -> CompiledMapping:
    """Read a YAML spec file and compile it."""
    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise MappingError(f"cannot read mapping {path.name}") from exc
    return compile_mapping(
        spec, target_schema, schemas_dir=schemas_dir, base_dir=path.resolve().parent
    )


@dataclass(frozen=True)
class CompiledMapping:
    """A compiled spec: ``map(record)`` gives a validated target record.

    ``direction`` is ``provider_to_canonical`` (source is a department entity,
    target a canonical model) or ``canonical_to_consumer`` (source is a
    canonical model, target a consumer's own schema). ``canonical_model`` is
    the canonical side either way, the one classification labels come from.
    """

    source_system: str
    source_entity: str
    target_model: str
    fields: tuple[Field, ...]
    source_fields: Mapping[str, frozenset[str]]
    validator: jsonschema.Draft202012Validator | None
    direction: str = "provider_to_canonical"
    canonical_model: str = ""
    _fast: FastCheck | None = field(init=False, default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        # compiled once here; validate() trusts only its "valid" (see _fastcheck)
        if self.validator is not None:
            object.__setattr__(self, "_fast", fast_check(self.validator))

    @property
    def target_fields(self) -> tuple[str, ...]:
        return tuple(f[0] for f in self.fields)

    @property
    def required_targets(self) -> tuple[str, ...]:
        """Target fields marked ``required``: a record without them does not map."""
        return tuple(f[0] for f in self.fields if f[3])

    def required_source_fields(self, target_fields: Iterable[str] | None = None) -> tuple[str, ...]:
        """Top-level provider fields needed for ``target_fields`` (for push-down)."""
        wanted = self.target_fields if target_fields is None else tuple(target_fields)
        unknown = [t for t in wanted if t not in self.source_fields]
        if unknown:
            raise MappingError(f"mapping does not produce {sorted(unknown)}")
        needed: set[str] = set()
        for t in wanted:
            needed |= self.source_fields[t]
        return tuple(sorted(needed))

    def map_unvalidated(self, record: Mapping[str, Any]) -> dict[str, Any]:
        return apply_fields(self.fields, record)

    def validate(self, output: Mapping[str, Any], *, partial: bool = False) -> None:
        if self.validator is None:
            return
        if self._fast is not None and self._fast.accepts(output, partial=partial):
            return  # jsonschema would accept it too; rejections are rare and get its message
        for error in self.validator.iter_errors(output):
            if partial and error.validator == "required":
                continue  # the caller asked for a subset of the model's fields
            where = "/".join(str(p) for p in error.absolute_path) or "(record)"
            raise MappingError(
                f"{self.target_model} output invalid at {where}: {error.validator} check failed"
            )

    def map(
        self,
        record: Mapping[str, Any],
        *,
        partial: bool = False,
        only: frozenset[str] | None = None,
    ) -> dict[str, Any]:
        """``only`` (with ``partial``): run just the rules of these targets, so a rule
        for a target nobody asked for (a constant, a default) cannot fail the record."""
        fields = self.fields if only is None else tuple(f for f in self.fields if f[0] in only)
        out = apply_fields(fields, record)
        self.validate(out, partial=partial)
        return out


def _top(path: str) -> str:
    return path.split(".")[0]


def _sources_of(rule: Mapping[str, Any]) -> frozenset[str]:
    found: set[str] = set()
    if "from" in rule:
        found.add(_top(rule["from"]))
    if "concat" in rule:
        found |= {_top(p["from"]) for p in rule["concat"]["parts"] if "from" in p}
    if "each" in rule:
        found.add(_top(rule["each"]["from"]))
    if "when" in rule:
        found.add(_top(rule["when"]["field"]))
    return frozenset(found)


def _schema_props(schema: Mapping[str, Any]) -> frozenset[str] | None:
    """Top-level names a closed schema allows; ``None`` if it takes any name."""
    props = schema.get("properties")
    if schema.get("additionalProperties") is not False or not isinstance(props, Mapping):
        return None
    return frozenset(props)


def _consumer_schema(target: Mapping[str, Any], base_dir: Path | None) -> Mapping[str, Any]:
    name = str(target["schema"])
    if base_dir is None:
        raise MappingError(f"target schema {name!r} needs the spec's directory (load_mapping)")
    path = base_dir / name
    try:
        schema: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MappingError(f"target schema {name!r} does not load") from exc
    if not isinstance(schema, dict):
        raise MappingError(f"target schema {name!r} is not a JSON Schema object")
    return schema


@functools.cache
def _canonical_target(model: str, schemas_dir: Path | None) -> Mapping[str, Any]:
    """A shipped canonical schema, checked like any other target (once per process)."""
    from connectors.mapping.canonical import canonical_schema

    schema = canonical_schema(model, schemas_dir)
    verify_target_schema(schema, model, schemas_dir)
    return schema


def _verify_names(
    spec: Mapping[str, Any],
    sources: Mapping[str, frozenset[str]],
    source_props: frozenset[str] | None,
    target_props: frozenset[str] | None,
    source_label: str,
    target_label: str,
) -> None:
    """Every target must exist in a closed target schema; every source in a canonical one."""
    for target in spec["fields"]:
        top = _top(target)
        if target_props is not None and top not in target_props:
            raise MappingError(f"{target}: {target_label} has no field {top!r}")
        if source_props is not None:
            unknown = sorted(sources[target] - source_props)
            if unknown:
                raise MappingError(f"{target}: {source_label} has no field {unknown[0]!r}")


def compile_mapping(
    spec: Any,
    target_schema: Mapping[str, Any] | None = None,
    *,
    schemas_dir: Path | None = None,
    base_dir: Path | None = None,
) -> CompiledMapping:
    """Validate and compile ``spec``.

    The target schema defaults to the canonical model named by ``target.model``,
    or, for a consumer target, to the JSON Schema file ``target.schema`` in
    ``base_dir`` (the spec's own folder when loaded with ``load_mapping``).
    Field names are checked against closed schemas now, so a typo is a
    compile error naming the field rather than a failure on the first record.
    """
    from connectors.mapping.canonical import canonical_schema

    validate_spec(spec)
    codelists = spec.get("codelists", {})
    fields = compile_fields(spec["fields"], codelists, "", 0)
    source, target = spec["source"], spec["target"]
    sources = {t: _sources_of(r) for t, r in spec["fields"].items()}
    source_props: frozenset[str] | None = None
    if "model" in source:
        direction = "canonical_to_consumer"
        canonical = str(source["model"])
        source_system, source_entity = "canonical", canonical
        source_props = frozenset(canonical_schema(canonical, schemas_dir).get("properties", {}))
    else:
        direction = "provider_to_canonical"
        canonical = str(target.get("model", ""))
        source_system, source_entity = str(source["system"]), str(source["entity"])
    if "model" in target:
        model = str(target["model"])
        if direction == "canonical_to_consumer":
            canonical = model  # canonical → canonical (a re-shaping between majors)
        if target_schema is None:
            target_schema = _canonical_target(model, schemas_dir)
        else:
            verify_target_schema(target_schema, model, schemas_dir)
    else:
        model = f"{target['system']}.{target['entity']}@{target.get('version', 1)}"
        if direction == "provider_to_canonical":
            raise MappingError(
                f"source {source_system}.{source_entity} is a provider entity: it maps to a "
                "canonical model, and a consumer's own schema maps from one (source: {model: ...})"
            )
        if target_schema is None:
            target_schema = _consumer_schema(target, base_dir)
        verify_target_schema(target_schema, repr(str(target["schema"])), schemas_dir)
    _verify_names(spec, sources, source_props, _schema_props(target_schema), source_entity, model)
    validator = target_validator(target_schema, schemas_dir)
    verify_fixed_values(spec, validator)
    return CompiledMapping(
        source_system=source_system,
        source_entity=source_entity,
        target_model=model,
        fields=fields,
        source_fields=sources,
        validator=validator,
        direction=direction,
        canonical_model=canonical,
    )
