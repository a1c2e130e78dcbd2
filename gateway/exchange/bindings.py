"""Which connector and mapping serve a provider's dataset, and consumers' own schemas.

Administrators register a binding per (provider, dataset): the connector config,
the entity, and the mapping spec to the canonical model. Specs are validated and
compiled when registered (a bad one is refused before it can serve anything)
and again, once, when a node first uses them; connectors are built once per
binding version and reused, so their connection pools and circuit breakers
live as long as the gateway.

A connector config's ``${VAR}`` placeholders are scoped to the binding's provider
(``connectors.config.verify_placeholder_scope``): refused when written, and again
when expanded, so an administrator cannot read the gateway's secrets or another
provider's through a binding.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import structlog
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from connectors import Connector, ConnectorConfigError, ConnectorError, build_connector
from connectors.config import (
    KINDS,
    check_config,
    expand_placeholders,
    verify_placeholder_scope,
)
from connectors.mapping.canonical import classification_of
from connectors.mapping.compiler import CompiledMapping, compile_mapping
from gateway.auditing import AuditSink, audit_event
from gateway.db import session_scope
from gateway.dbtypes import utcnow
from gateway.errors import AccordError, NotFoundError, ValidationFailed
from gateway.exchange.models import (
    ConsumerMapping,
    ConsumerMappingCreate,
    DatasetBinding,
    DatasetBindingCreate,
)
from gateway.registry.models import Department
from gateway.statecache import StateCache, bump_generation

__all__ = ["BindingService", "ConnectorMisconfigured", "ResolvedBinding"]

log = structlog.get_logger(__name__)

R = TypeVar("R", DatasetBinding, ConsumerMapping)


class ConnectorMisconfigured(AccordError):
    """The provider's connector cannot be built from its stored configuration (a
    placeholder without a value, say): a fault of this gateway, nothing released."""

    status = 500
    default_code = "connector_misconfigured"
    title = "Provider connector misconfigured"


@dataclass(frozen=True)
class ResolvedBinding:
    """A binding ready to serve: compiled mapping, live connector, field labels."""

    provider: str
    dataset: str
    model: str
    entity: str
    subject_field: str
    mapping: CompiledMapping
    connector: Connector
    labels: Mapping[str, Any]
    version: datetime


def _compile(spec: Mapping[str, Any], schema: Mapping[str, Any] | None = None) -> CompiledMapping:
    try:
        return compile_mapping(dict(spec), schema)
    except ConnectorError as exc:
        raise ValidationFailed(exc.detail, code="mapping_invalid") from exc


class BindingService:
    def __init__(self, engine: Engine, *, audit: AuditSink | None = None) -> None:
        self.engine = engine
        self.audit = audit
        self._live: dict[tuple[str, str], ResolvedBinding] = {}
        self._consumer: dict[tuple[str, str], tuple[datetime, CompiledMapping]] = {}
        self._lock = asyncio.Lock()

    # -- administration -------------------------------------------------------

    def put_binding(
        self, provider: str, data: DatasetBindingCreate, *, actor: str
    ) -> DatasetBinding:
        """Register or replace how ``provider`` serves ``data.dataset_id``."""
        mapping = _compile(data.mapping)
        if mapping.target_model != data.model:
            raise ValidationFailed(
                f"the mapping produces {mapping.target_model}, not {data.model}",
                code="mapping_invalid",
            )
        if data.subject_field not in mapping.target_fields:
            raise ValidationFailed(
                f"the mapping does not produce the subject field {data.subject_field!r}",
                code="mapping_invalid",
            )
        _check_connector_config(
            data.connector, data.entity, provider, others=self._department_ids(), mapping=mapping
        )
        return self._upsert(
            DatasetBinding,
            (provider, data.dataset_id),
            {"provider": provider, **data.model_dump()},
            audit_event(
                "admin",
                actor=actor,
                outcome="dataset_bound",
                provider=provider,
                dataset=data.dataset_id,
                model=data.model,
                connector_kind=str(data.connector.get("kind")),
            ),
        )

    def _department_ids(self) -> list[str]:
        """Every registered department: whose placeholder prefix is whose."""
        with Session(self.engine) as s:
            return list(s.exec(select(Department.id)))

    def get_binding(self, provider: str, dataset: str) -> DatasetBinding:
        with Session(self.engine) as s:
            row = s.get(DatasetBinding, (provider, dataset))
        if row is None:
            raise NotFoundError(
                f"{provider} serves no dataset {dataset!r}", code="dataset_not_bound"
            )
        return row

    def put_consumer_mapping(
        self, consumer: str, data: ConsumerMappingCreate, *, actor: str
    ) -> ConsumerMapping:
        _compile(data.mapping, data.json_schema)
        return self._upsert(
            ConsumerMapping,
            (consumer, data.name),
            {"consumer": consumer, **data.model_dump()},
            audit_event(
                "admin",
                actor=actor,
                outcome="consumer_mapping_set",
                consumer=consumer,
                mapping=data.name,
            ),
        )

    def _upsert(
        self, model: type[R], key: tuple[str, str], values: dict[str, Any], event: dict[str, Any]
    ) -> R:
        """Insert or replace one row; the change, its audit entry and the generation
        bump commit together (no entry, no change)."""
        with session_scope(self.engine) as s:
            row = s.get(model, key)
            if row is None:
                row = model(**values)
            else:
                for name, value in values.items():
                    setattr(row, name, value)
            row.updated_at = utcnow()
            s.add(row)
            s.flush()
            bump_generation(s.connection())
            if self.audit is not None:
                self.audit.append_in(s.connection(), event)
            return row

    # -- serving --------------------------------------------------------------

    async def resolve(
        self, provider: str, dataset: str, *, state: dict[Hashable, Any] | None = None
    ) -> ResolvedBinding:
        """The live binding; rebuilt when an administrator changed it.

        With a ``StateCache`` generation the row is read once per generation.
        """
        if state is None:
            row = await asyncio.to_thread(self.get_binding, provider, dataset)
        else:
            row = StateCache.get(
                state,
                ("binding", provider, dataset),
                lambda: self.get_binding(provider, dataset),
            )
        key = (provider, dataset)
        live = self._live.get(key)
        if live is not None and live.version == row.updated_at:
            return live
        async with self._lock:
            live = self._live.get(key)
            if live is not None and live.version == row.updated_at:
                return live
            others = await asyncio.to_thread(self._department_ids)
            try:
                config = expand_placeholders(
                    row.connector, os.environ, provider=provider, others=others
                )
                connector = build_connector(config)
            except ConnectorError as exc:
                # The operator's to fix, not the caller's: the specifics (an
                # environment variable's name, an endpoint) go to the log only.
                log.error(
                    "connector_misconfigured", provider=provider, dataset=dataset, error=exc.detail
                )
                raise ConnectorMisconfigured(
                    f"the connector to {provider}'s {dataset} cannot be used as configured"
                ) from exc
            try:
                mapping = _compile(row.mapping)
            except ValidationFailed as exc:  # stored before a change to the mapping language
                log.error(
                    "mapping_misconfigured", provider=provider, dataset=dataset, error=exc.detail
                )
                await connector.aclose()
                raise ConnectorMisconfigured(
                    f"the mapping of {provider}'s {dataset} cannot be used as stored"
                ) from exc
            resolved = ResolvedBinding(
                provider=provider,
                dataset=dataset,
                model=row.model,
                entity=row.entity,
                subject_field=row.subject_field,
                mapping=mapping,
                connector=connector,
                labels=classification_of(row.model),
                version=row.updated_at,
            )
            self._live[key] = resolved
        if live is not None:
            await live.connector.aclose()
        return resolved

    def consumer_mapping(self, consumer: str, name: str) -> CompiledMapping:
        with Session(self.engine) as s:
            row = s.get(ConsumerMapping, (consumer, name))
        if row is None:
            raise NotFoundError(
                f"{consumer} has no schema mapping {name!r}", code="unknown_target_schema"
            )
        cached = self._consumer.get((consumer, name))
        if cached is not None and cached[0] == row.updated_at:
            return cached[1]
        compiled = _compile(row.mapping, row.json_schema)
        self._consumer[(consumer, name)] = (row.updated_at, compiled)
        return compiled

    async def close(self) -> None:
        live, self._live = list(self._live.values()), {}
        for binding in live:
            await binding.connector.aclose()


def _check_connector_config(
    config: Mapping[str, Any],
    entity: str,
    provider: str,
    *,
    others: list[str],
    mapping: CompiledMapping | None = None,
) -> None:
    """Refuse a config that cannot serve ``entity`` or names a variable outside
    ``provider``'s scope, and a ``mapping`` reading a field the entity does not expose.

    The connector is built without the environment (``check_config``: placeholders
    take stand-ins), so a zero cap, a wrong type or a WSDL operation that does not
    exist is refused now, not found by every exchange as a 500; endpoints,
    credentials and the provider's own data are checked when first used.
    """
    try:
        verify_placeholder_scope(config, provider, others=others)
    except ConnectorConfigError as exc:  # names the variable and the prefix, never a value
        raise ValidationFailed(exc.detail, code="connector_config_invalid") from exc
    if config.get("kind") not in KINDS:
        raise ValidationFailed(
            f"connector kind must be one of {list(KINDS)}", code="connector_config_invalid"
        )
    entities = config.get("entities")
    if not isinstance(entities, Mapping) or entity not in entities:
        raise ValidationFailed(
            f"the connector config has no entity {entity!r}", code="connector_config_invalid"
        )
    try:
        exposed = set(check_config(config)[entity])
    except ConnectorConfigError as exc:  # the config's own words: no value was read
        raise ValidationFailed(exc.detail, code="connector_config_invalid") from exc
    # The fetch asks for what the mapping reads: a field the entity does not expose
    # would be refused on every exchange.
    missing = {
        target: sorted(set(sources) - exposed)
        for target, sources in (mapping.source_fields.items() if mapping is not None else ())
        if set(sources) - exposed
    }
    if missing:
        named = "; ".join(f"{t} reads {', '.join(m)}" for t, m in sorted(missing.items()))
        raise ValidationFailed(
            f"entity {entity!r} does not expose what the mapping reads ({named}); "
            f"it exposes {sorted(exposed)}",
            code="connector_config_invalid",
        )
