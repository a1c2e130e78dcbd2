"""Configuration refuses weak secrets; logs carry a request id and never payloads."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from gateway.log import configure_logging, get_logger
from gateway.settings import DEV_SECRET, Settings


def test_empty_secret_refused_outside_dev_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACCORD_PSEUDONYM_SECRET", raising=False)
    with pytest.raises(ValidationError):
        Settings(dev_mode=False)


@pytest.mark.parametrize("secret", [DEV_SECRET, "short"])
def test_default_or_weak_secret_refused(secret: str) -> None:
    with pytest.raises(ValidationError):
        Settings(dev_mode=False, pseudonym_secret=secret)


def test_dev_mode_uses_the_dev_secret_and_env_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACCORD_GATEWAY_ID", "gw-test")
    s = Settings(dev_mode=True)
    assert s.gateway_id == "gw-test"
    assert s.pseudonym_secret.get_secret_value() == DEV_SECRET
    assert DEV_SECRET not in repr(s)


def test_production_settings_with_a_real_secret() -> None:
    s = Settings(
        dev_mode=False, pseudonym_secret="x" * 40, database_url="postgresql+psycopg://u@h/db"
    )
    assert s.resolved_database_url.startswith("postgresql")
    assert s.json_logs


def test_json_logs_have_request_id_and_no_payload(capsys: pytest.CaptureFixture[str]) -> None:
    import structlog

    configure_logging(json_logs=True)
    structlog.contextvars.bind_contextvars(request_id="req-123")
    get_logger("t").info("exchange_done", records=[{"name": "Alice"}], dataset="person")
    structlog.contextvars.clear_contextvars()
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["request_id"] == "req-123" and line["dataset"] == "person"
    assert "Alice" not in json.dumps(line)
