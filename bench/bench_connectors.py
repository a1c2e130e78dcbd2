"""Connector overhead per fetch vs a bare client call to the same sample backend.

Run ``python -m bench.bench_connectors``. The sample departments are started
on loopback with ``examples.launch``; each kind is then read by key through
its connector (allow-list and key checks, resilience wrapper, byte cap,
projection, frozen result) and through the thinnest direct call that gets the
same record: a bare pooled ``httpx`` GET for REST, a bare ``httpx`` POST of the
same SOAP envelope parsed by lxml, a bare SQLAlchemy SELECT, a dict lookup for
an already-parsed CSV. Fetches run one after another (latency, not
throughput); the table shows median and mean microseconds and the overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from lxml import etree

from connectors.config import build_connector
from examples.launch import TOKEN, Departments, launch

Call = Callable[[str], Awaitable[Any]]


async def _time(call: Call, keys: list[str], n: int) -> list[float]:
    for k in keys[:20]:  # warm pools and caches
        await call(k)
    out = []
    for i in range(n):
        key = keys[i % len(keys)]
        t0 = time.perf_counter()
        await call(key)
        out.append((time.perf_counter() - t0) * 1e6)
    return out


def _keys(department: str) -> list[str]:
    if department == "civil_registry":
        from examples.synth import people

        return [p.person_id for p in people()]
    if department == "health_insurer":
        from examples.health_insurer.db import rows

        return [str(r["MEMBER_SSN"]) for r in rows()]
    if department == "tax_authority":
        from examples.tax_authority.app import tax_records

        return list(tax_records())
    from examples.welfare_office.export import rows as welfare_rows

    return [r["CLAIMANT_ID"] for r in welfare_rows()]


async def _rest(deps: Departments, n: int) -> tuple[list[float], list[float]]:
    cfg = deps.config("civil_registry")
    fields = cfg["entities"]["citizen"]["fields"]
    keys = _keys("civil_registry")
    conn = build_connector(cfg)
    async with httpx.AsyncClient(
        base_url=deps.url("civil_registry"), headers={"Authorization": f"Bearer {TOKEN}"}
    ) as bare_client:

        async def bare(key: str) -> Any:
            r = await bare_client.get(
                f"/api/v2/citizens/{key}", params={"fields": ",".join(fields)}
            )
            r.raise_for_status()
            return r.json()

        try:
            return await _time(bare, keys, n), await _time(
                lambda k: conn.fetch("citizen", k, fields), keys, n
            )
        finally:
            await conn.aclose()


async def _soap(deps: Departments, n: int) -> tuple[list[float], list[float]]:
    from connectors.soap import SoapConnector, hardened_parser

    cfg = deps.config("tax_authority")
    fields = cfg["entities"]["tax_status"]["fields"]
    keys = _keys("tax_authority")
    conn = build_connector(cfg)
    assert isinstance(conn, SoapConnector)
    envelopes = {
        k: etree.tostring(
            conn._zeep.create_message(conn._service, "GetTaxStatus", TaxpayerId=k),
            xml_declaration=True,
            encoding="utf-8",
        )
        for k in keys
    }
    async with httpx.AsyncClient() as bare_client:

        async def bare(key: str) -> Any:
            r = await bare_client.post(
                conn.address,
                content=envelopes[key],
                headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'},
            )
            return etree.fromstring(r.content, hardened_parser())

        try:
            return await _time(bare, keys, n), await _time(
                lambda k: conn.fetch("tax_status", k, fields), keys, n
            )
        finally:
            await conn.aclose()


async def _sql(deps: Departments, n: int) -> tuple[list[float], list[float]]:
    cfg = deps.config("health_insurer")
    fields = cfg["entities"]["member_cover"]["fields"]
    keys = _keys("health_insurer")
    conn = build_connector(cfg)
    engine = sa.create_engine(deps.url("health_insurer"))
    table = sa.Table("MEMBER_COVER", sa.MetaData(), autoload_with=engine)
    stmt = sa.select(*[table.c[f] for f in fields]).where(
        table.c["MEMBER_SSN"] == sa.bindparam("k")
    )

    async def bare(key: str) -> Any:
        def run() -> Any:
            with engine.connect() as c:
                return dict(c.execute(stmt, {"k": key}).mappings().one())

        return await asyncio.to_thread(run)

    try:
        return await _time(bare, keys, n), await _time(
            lambda k: conn.fetch("member_cover", k, fields), keys, n
        )
    finally:
        await conn.aclose()
        engine.dispose()


def _csv_index(folder: Path) -> dict[str, dict[str, str]]:
    import csv

    newest = sorted(folder.glob("claims_*.csv"))[-1]
    with newest.open(newline="", encoding="utf-8") as fh:
        return {row["CLAIMANT_ID"]: row for row in csv.DictReader(fh, delimiter=";")}


async def _csv(deps: Departments, n: int) -> tuple[list[float], list[float]]:
    cfg = deps.config("welfare_office")
    fields = cfg["entities"]["claim"]["fields"]
    keys = _keys("welfare_office")
    conn = build_connector(cfg)
    index = _csv_index(Path(deps.url("welfare_office")))

    async def bare(key: str) -> Any:
        return {f: index[key][f] for f in fields}

    try:
        return await _time(bare, keys, n), await _time(
            lambda k: conn.fetch("claim", k, fields), keys, n
        )
    finally:
        await conn.aclose()


KINDS: dict[str, tuple[str, str, Callable[[Departments, int], Awaitable[Any]]]] = {
    "rest": ("civil_registry", "bare httpx GET", _rest),
    "soap": ("tax_authority", "bare httpx POST+lxml", _soap),
    "sql": ("health_insurer", "bare SQLAlchemy SELECT", _sql),
    "csv": ("welfare_office", "dict lookup", _csv),
}


async def _run(deps: Departments, kinds: list[str], n: int) -> None:
    head = f"{'kind':<5} {'baseline':<22} {'base p50':>9} {'conn p50':>9} {'base avg':>9} "
    head += f"{'conn avg':>9} {'overhead p50':>13}"
    print(f"fetch latency by key, microseconds, {n} sequential fetches each, loopback")
    print(head)
    print("-" * len(head))
    for kind in kinds:
        _, label, fn = KINDS[kind]
        base, conn = await fn(deps, n)
        b50, c50 = statistics.median(base), statistics.median(conn)
        print(
            f"{kind:<5} {label:<22} {b50:>9.0f} {c50:>9.0f} {statistics.fmean(base):>9.0f} "
            f"{statistics.fmean(conn):>9.0f} {c50 - b50:>+8.0f} ({c50 / b50 - 1:+.0%})"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_connectors")
    ap.add_argument("-n", type=int, default=500, help="fetches per measurement")
    ap.add_argument("--kinds", default="rest,soap,sql,csv")
    args = ap.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    names = sorted({KINDS[k][0] for k in kinds})
    with launch(names) as deps:
        asyncio.run(_run(deps, kinds, args.n))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
