"""With ``ACCORD_METRICS_TOKEN`` set, ``/metrics`` answers only its bearer, over HTTP.

The counters name who exchanges with whom and how often, why exchanges were
refused and which provider is down: nothing for anyone who reaches the port.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests._support.gateway import Gateway, sqlite_gateway

SCRAPE_TOKEN = "scrape-token-for-the-test-0123456789"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    data = tmp_path_factory.mktemp("gw-metrics")
    with sqlite_gateway(data, extra_env={"ACCORD_METRICS_TOKEN": SCRAPE_TOKEN}) as gateway:
        yield gateway


def _refused(response: httpx.Response, code: str) -> dict[str, Any]:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "accord_" not in response.text
    doc: dict[str, Any] = response.json()
    assert doc["code"] == code
    return doc


def test_metrics_without_a_token_are_refused(gw: Gateway) -> None:
    _refused(httpx.get(gw.url + "/metrics"), "missing_token")


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer wrong",
        f"Bearer {SCRAPE_TOKEN}x",
        f"Bearer {SCRAPE_TOKEN[:-1]}",
        f"Basic {SCRAPE_TOKEN}",
    ],
)
def test_metrics_with_another_token_are_refused(gw: Gateway, authorization: str) -> None:
    response = httpx.get(gw.url + "/metrics", headers={"Authorization": authorization})
    _refused(response, "missing_token" if authorization.startswith("Basic") else "invalid_token")


def test_metrics_with_the_scrape_token_are_served(gw: Gateway) -> None:
    response = httpx.get(gw.url + "/metrics", headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"})
    assert response.status_code == 200
    assert "accord_policy_engine" in response.text


def test_health_stays_open(gw: Gateway) -> None:
    """Probes of the process manager carry no token."""
    assert httpx.get(gw.url + "/livez").status_code == 200
