"""A welfare office that drops broken, oversized or hostile exports into its folder.

Each test writes a real file (or link, or FIFO) into a fresh drop folder and
reads it through the CSV connector. A half-valid export is never served: the
whole read fails with a stable code, and nothing is returned for any key.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from connectors.config import build_connector
from connectors.csvdrop import CsvConnector
from connectors.interface import ConnectorError, MappingError
from connectors.mapping import load_mapping
from examples.launch import mapping_path
from examples.welfare_office.export import COLUMNS

KEY = "12345678901"
HEADER = ";".join(COLUMNS)
ROW = f"WB1;{KEY};01;A;01-02-2024;1.234,50;3"


def config(directory: Path, **over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "kind": "csv",
        "name": "hostile_welfare",
        "directory": str(directory),
        "max_response_bytes": 64 * 1024,
        "max_rows": 50,
        "timeouts": {"total": 5.0},
        "entities": {
            "claim": {
                "pattern": "claims_*.csv",
                "delimiter": ";",
                "key": "CLAIMANT_ID",
                "key_pattern": "[0-9]{11}",
                "fields": COLUMNS,
            }
        },
    }
    cfg.update(over)
    return cfg


@pytest.fixture
async def drop(tmp_path: Path) -> AsyncIterator[Callable[[bytes], CsvConnector]]:
    made: list[CsvConnector] = []

    def make(content: bytes, name: str = "claims_20251124.csv") -> CsvConnector:
        (tmp_path / name).write_bytes(content)
        conn = build_connector(config(tmp_path))
        assert isinstance(conn, CsvConnector)
        made.append(conn)
        return conn

    yield make
    for conn in made:
        await conn.aclose()


async def code_of(conn: CsvConnector) -> str:
    with pytest.raises(ConnectorError) as err:
        await conn.fetch("claim", KEY, COLUMNS)
    return err.value.code


def lines(*rows: str) -> bytes:
    return ("\n".join([HEADER, *rows]) + "\n").encode()


async def test_good_export_is_read(drop: Callable[[bytes], CsvConnector]) -> None:
    result = await drop(lines(ROW)).fetch("claim", KEY, ["CLAIM_REF", "MONTHLY_AMT"])
    assert dict(result.record) == {"CLAIM_REF": "WB1", "MONTHLY_AMT": "1.234,50"}


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"", "connector_bad_response"),
        (lines(ROW).replace(b"WB1", b"WB\x001"), "connector_bad_response"),
        (lines(ROW, "WB2;1;01"), "connector_bad_response"),  # ragged row
        (lines(ROW, ROW.replace("WB1", "WB2")), "connector_bad_response"),  # duplicate key
        (lines(ROW).replace(b"HH_SIZE", b"HOUSEHOLD"), "connector_bad_response"),  # header
        (lines(ROW).replace(b"HH_SIZE", b"CLAIM_REF"), "connector_bad_response"),  # dup col
        (lines('WB1;"unterminated;01;A;x;y;1'), "connector_bad_response"),
        (
            lines(ROW).replace(b"Nowhere", b"") + "Zürich".encode("latin-1"),
            "connector_bad_response",
        ),
        (lines(ROW + "x" * 70_000), "response_too_large"),  # over the byte cap
        (lines(*[ROW.replace(KEY, f"{i:011d}") for i in range(60)]), "response_too_large"),
    ],
    ids=[
        "empty",
        "nul",
        "ragged",
        "duplicate_key",
        "missing_column",
        "duplicate_column",
        "unterminated_quote",
        "wrong_encoding",
        "too_big",
        "too_many_rows",
    ],
)
async def test_broken_export_fails_whole(
    drop: Callable[[bytes], CsvConnector], content: bytes, code: str
) -> None:
    assert await code_of(drop(content)) == code


async def test_gigantic_field_is_refused(tmp_path: Path) -> None:
    (tmp_path / "claims_1.csv").write_bytes(lines(ROW.replace("WB1", "W" * 70_000)))
    conn = build_connector(config(tmp_path, max_response_bytes=1024 * 1024))
    assert await code_of(conn) == "connector_bad_response"  # type: ignore[arg-type]


async def test_symlink_to_a_gateway_file_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "gateway-secret.csv"
    secret.write_bytes(lines(ROW))
    drop_dir = tmp_path / "drop"
    drop_dir.mkdir()
    (drop_dir / "claims_20251124.csv").symlink_to(secret)
    conn = build_connector(config(drop_dir))
    assert await code_of(conn) == "unsafe_content"  # type: ignore[arg-type]


async def test_fifo_cannot_block_the_reader(tmp_path: Path) -> None:
    (tmp_path / "claims_20251123.csv").write_bytes(lines(ROW))
    os.mkfifo(tmp_path / "claims_20251124.csv")  # newest, and would block an open()
    conn = build_connector(config(tmp_path))
    assert await code_of(conn) == "unsafe_content"  # type: ignore[arg-type]


def test_pattern_cannot_leave_the_drop_folder(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    cfg["entities"]["claim"]["pattern"] = "../*.csv"
    with pytest.raises(ConnectorError) as caught:  # refused when built, before any read
        build_connector(cfg)
    assert caught.value.code == "connector_config_invalid"


async def test_empty_drop_folder_is_unavailable(tmp_path: Path) -> None:
    conn = build_connector(config(tmp_path))
    assert await code_of(conn) == "connector_unavailable"  # type: ignore[arg-type]


async def test_partial_upload_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "claims_20251123.csv").write_bytes(lines(ROW))
    (tmp_path / ".claims_20251124.csv.part").write_bytes(b"CLAIM_REF;half")
    conn = build_connector(config(tmp_path))
    result = await conn.fetch("claim", KEY, ["CLAIM_REF"])
    assert result.record["CLAIM_REF"] == "WB1"


async def test_a_newer_broken_export_is_not_papered_over_by_the_cache(tmp_path: Path) -> None:
    (tmp_path / "claims_20251123.csv").write_bytes(lines(ROW))
    conn = build_connector(config(tmp_path))
    assert (await conn.fetch("claim", KEY, ["CLAIM_REF"])).record["CLAIM_REF"] == "WB1"
    (tmp_path / "claims_20251124.csv").write_bytes(lines(ROW, "ragged;row"))
    assert await code_of(conn) == "connector_bad_response"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("row", "target"),
    [
        (ROW.replace(";01;", ";77;"), "benefit_type"),
        (ROW.replace("01-02-2024", "2024-02-01"), "filed_on"),
        (ROW.replace("1.234,50", "lots"), "monthly_amount"),
        (ROW.replace(";3", ";three"), "household_size"),
    ],
)
async def test_malformed_values_fail_mapping_naming_the_field(
    drop: Callable[[bytes], CsvConnector], row: str, target: str
) -> None:
    mapping = load_mapping(mapping_path("welfare_office", "claim"))
    result = await drop(lines(row)).fetch("claim", KEY, mapping.required_source_fields())
    with pytest.raises(MappingError) as err:
        mapping.map(result.record)
    assert err.value.code == "mapping_error"
    assert err.value.detail.startswith(target)
