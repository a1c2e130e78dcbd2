"""Steps 4–5 of an exchange: read the provider's system through its connector.

Only the fields that will leave (or that a predicate or an aggregate needs, plus
what the mapping requires) are pushed down to the source. Connector faults
become problem codes here; nothing above this module sees a connector error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

from connectors import ConnectorError, FetchContext
from connectors.interface import ConnectorConfigError, InvalidKey, NotFound, UnknownField
from gateway.errors import AccordError, NotFoundError, ValidationFailed
from gateway.exchange.bindings import ConnectorMisconfigured, ResolvedBinding
from gateway.exchange.schemas import ExchangeRequest
from gateway.policy.engine import Decision
from gateway.release_obligations import parse_predicate

__all__ = ["ConnectorFault", "ConnectorTimeoutFault", "connector_fault", "fetch_records"]

log = structlog.get_logger(__name__)


class ConnectorFault(AccordError):
    """The provider's system failed; nothing was released."""

    status = 502
    default_code = "connector_error"
    title = "Provider system failed"


class ConnectorTimeoutFault(ConnectorFault):
    """The provider's system did not answer in time; nothing was released."""

    status = 504
    default_code = "connector_timeout"
    title = "Provider system timed out"


async def fetch_records(
    binding: ResolvedBinding,
    request: ExchangeRequest,
    decision: Decision,
    ctx: FetchContext,
    max_records: int,
) -> list[Mapping[str, Any]]:
    query = request.query
    if query.kind == "aggregate":
        wanted = set(query.group_by) | {m[4:-1] for m in query.measures if m.startswith("sum(")}
    elif query.kind == "verify":
        wanted = {str(parse_predicate(query.predicate)[1])}
    else:
        wanted = {
            name
            for name, op in decision.obligations.items()
            if op.get("operation") in ("pass", "mask", "generalise", "pseudonymise")
        }
    wanted |= set(binding.mapping.required_targets)
    wanted &= set(binding.mapping.target_fields)
    source_fields = binding.mapping.required_source_fields(sorted(wanted)) if wanted else ()
    if query.kind != "aggregate":
        got = await binding.connector.fetch(binding.entity, query.subject, source_fields, ctx)
        return [got.record]
    records: list[Mapping[str, Any]] = []
    cursor: str | None = None
    while True:
        page = await binding.connector.read(
            binding.entity, source_fields, cursor=cursor, limit=500, ctx=ctx
        )
        records.extend(page.records)
        if len(records) > max_records:
            raise ValidationFailed(
                f"aggregates are limited to {max_records} source records",
                code="aggregate_too_large",
            )
        cursor = page.next_cursor
        if cursor is None:
            return records


def connector_fault(exc: ConnectorError) -> AccordError:
    """The problem a connector's error is answered with, by whose fault it is: the
    caller's (no such record, a key of the wrong shape), this gateway's (a connector
    or binding that cannot serve what the agreement permits: 500, specifics logged
    for the operator only) or the provider's system's (502, or 504 for a timeout)."""
    if isinstance(exc, NotFound):
        return NotFoundError("the provider holds no such record", code="subject_not_found")
    if isinstance(exc, InvalidKey):
        return ValidationFailed(
            f"the subject key does not fit the provider's records: {exc.detail}",
            code="invalid_key",
        )
    if isinstance(exc, ConnectorConfigError | UnknownField):
        log.error("connector_misconfigured", connector=exc.connector, error=exc.detail)
        return ConnectorMisconfigured("the provider's connector cannot serve this request")
    kind = ConnectorTimeoutFault if exc.http_status == 504 else ConnectorFault
    return kind(f"the provider's system failed: {exc.detail}", code=exc.code)
