"""Steps 4–5 of an exchange: read the provider's system through its connector.

Only the fields that will leave (or that a predicate or an aggregate needs, plus
what the mapping requires and, for a lookup, the subject field the record is
checked against) are pushed down to the source. Connector faults become problem
codes here; nothing above this module sees a connector error.

Everything a provider sends is checked here, whatever the connector kind, before
it is mapped: text must be Unicode scalar values (a lone surrogate, which JSON can
spell as ``"\\ud800"``, cannot be hashed, canonicalised or pseudonymised), and a
paged read must end, within one deadline for the whole read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Mapping
from typing import Any

import structlog

from connectors import ConnectorError, FetchContext
from connectors.interface import (
    ConnectorBadResponse,
    ConnectorConfigError,
    ConnectorTimeout,
    InvalidKey,
    NotFound,
    UnknownField,
)
from gateway.errors import AccordError, NotFoundError, ValidationFailed
from gateway.exchange.bindings import ConnectorMisconfigured, ResolvedBinding
from gateway.exchange.schemas import ExchangeRequest
from gateway.policy.engine import Decision
from gateway.release_obligations import parse_predicate

__all__ = [
    "MIN_PAGE_RECORDS",
    "PAGE_LIMIT",
    "ConnectorFault",
    "ConnectorTimeoutFault",
    "connector_fault",
    "fetch_records",
    "verify_record_subject",
    "verify_scalar_text",
    "wanted_targets",
]

log = structlog.get_logger(__name__)

#: Records asked for per page of a bulk read.
PAGE_LIMIT = 500
#: A paged read may take at most ``max_records // MIN_PAGE_RECORDS + 1`` pages
#: (5,001 at the default 100,000 records): a provider paging fewer records than
#: this on average (empty pages with fresh cursors, say) is not answering.
MIN_PAGE_RECORDS = 20


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


def wanted_targets(
    binding: ResolvedBinding, request: ExchangeRequest, decision: Decision
) -> frozenset[str]:
    """The canonical fields this exchange maps: those that may leave (or that a
    predicate or an aggregate reads), the mapping's required ones, and for a lookup
    the subject field, which the record is checked against but released only under
    an obligation of its own. No other rule runs, so a rule for a field nobody asked
    for (a constant, a default) cannot fail the exchange."""
    query = request.query
    if query.kind == "aggregate":
        wanted = set(query.group_by) | {m[4:-1] for m in query.measures if m.startswith("sum(")}
    elif query.kind == "verify":
        wanted = {str(parse_predicate(query.predicate)[1]), binding.subject_field}
    else:
        wanted = {
            name
            for name, op in decision.obligations.items()
            if op.get("operation") in ("pass", "mask", "generalise", "pseudonymise")
        }
        wanted.add(binding.subject_field)
    wanted |= set(binding.mapping.required_targets)
    return frozenset(wanted & set(binding.mapping.target_fields))


async def fetch_records(
    binding: ResolvedBinding,
    request: ExchangeRequest,
    targets: frozenset[str],
    ctx: FetchContext,
    max_records: int,
) -> list[Mapping[str, Any]]:
    """The provider's records for ``targets``: one by key, or every page of a bulk
    read, all within ``ctx.timeout`` seconds; each checked by ``verify_scalar_text``."""
    query = request.query
    source_fields = binding.mapping.required_source_fields(sorted(targets)) if targets else ()
    if query.kind != "aggregate":
        got = await binding.connector.fetch(binding.entity, query.subject, source_fields, ctx)
        verify_scalar_text(got.record)
        return [got.record]
    return await _read_pages(binding, source_fields, ctx, max_records)


async def _read_pages(
    binding: ResolvedBinding,
    source_fields: tuple[str, ...],
    ctx: FetchContext,
    max_records: int,
) -> list[Mapping[str, Any]]:
    """Every page, under one deadline: each page gets only the budget left.

    A cursor the provider gave before (the same page again, or a cycle) or more
    pages than ``MIN_PAGE_RECORDS`` allows is a bad answer; past the deadline the
    read is a timeout."""
    budget = ctx.timeout if ctx.timeout is not None else 10.0
    deadline = time.monotonic() + budget
    max_pages = max_records // MIN_PAGE_RECORDS + 1
    seen: set[bytes] = set()
    records: list[Mapping[str, Any]] = []
    cursor: str | None = None
    for _ in range(max_pages):
        left = deadline - time.monotonic()
        if left <= 0:
            raise ConnectorTimeout(
                f"the paged read did not finish within {budget:g} s", connector=binding.provider
            )
        page = await binding.connector.read(
            binding.entity,
            source_fields,
            cursor=cursor,
            limit=PAGE_LIMIT,
            ctx=dataclasses.replace(ctx, timeout=left),
        )
        for record in page.records:
            verify_scalar_text(record)
        records.extend(page.records)
        if len(records) > max_records:
            raise ValidationFailed(
                f"aggregates are limited to {max_records} source records",
                code="aggregate_too_large",
            )
        cursor = page.next_cursor
        if cursor is None:
            return records
        verify_scalar_text(cursor)
        digest = hashlib.sha256(cursor.encode("utf-8")).digest()
        if digest in seen:
            raise ConnectorBadResponse(
                "the provider repeated a page cursor", connector=binding.provider
            )
        seen.add(digest)
    raise ConnectorBadResponse(
        f"the provider's list did not end within {max_pages} pages", connector=binding.provider
    )


def verify_scalar_text(value: Any) -> None:
    """Raise ``ConnectorBadResponse`` unless every string in ``value`` (keys too) is
    made of Unicode scalar values, i.e. encodes as UTF-8: a lone surrogate would
    otherwise fail later, in hashing, canonical JSON or a pseudonym, unaudited."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    raise ConnectorBadResponse(
                        "the provider sent text that is not valid Unicode (a lone surrogate)"
                    ) from None
        elif isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


def verify_record_subject(record: Mapping[str, Any], subject_field: str, subject: str) -> None:
    """Raise ``connector_bad_response`` unless the record is the one asked for.

    The provider's answer to a lookup of ``subject`` must carry ``subject`` in its
    subject field, or another person's record would be released and audited (and
    shown in the access log) under the requested subject. Compared exactly as the
    key was sent: the same characters, no case folding, trimming or Unicode
    normalisation (the audit pseudonym and the access log are keyed by those exact
    characters too); a whole number in the record compares by its decimal digits."""
    value: Any = record
    for part in subject_field.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or value != subject:
        raise ConnectorFault(
            f"the provider answered with a record whose {subject_field} is not "
            "the subject asked for",
            code="connector_bad_response",
        )


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
