"""Fixtures of the policy suites: the shipped bundle and both engines on one loop."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.policy.bundle import PolicyBundle
from gateway.policy.embedded import EmbeddedEngine
from gateway.policy.opa import OpaEngine
from tests._support.servers import ROOT, opa_binary
from tests.policies.harness import LoopThread

POLICY_DIR = ROOT / "policies"


@dataclass
class Engines:
    loop: LoopThread
    embedded: EmbeddedEngine
    opa: OpaEngine
    bundle: PolicyBundle


@pytest.fixture(scope="session")
def opa_bin() -> Path:
    return opa_binary()


@pytest.fixture(scope="session")
def shipped_bundle() -> PolicyBundle:
    return PolicyBundle.from_directory(POLICY_DIR)


@pytest.fixture(scope="session", params=["interpreter", "vm"])
def engines(
    request: pytest.FixtureRequest, opa_url: str, shipped_bundle: PolicyBundle
) -> Iterator[Engines]:
    """Both engines loaded with the shipped policies; OPA is the real server.

    The embedded engine runs once as regorus' interpreter and once on its VM.
    """
    loop = LoopThread()
    embedded = EmbeddedEngine(timeout_ms=5000, vm=request.param == "vm")
    opa = loop.run(OpaEngine.connect(opa_url, timeout_ms=5000))
    loop.run(embedded.load(shipped_bundle))
    loop.run(opa.load(shipped_bundle))
    try:
        yield Engines(loop, embedded, opa, shipped_bundle)
    finally:
        loop.run(opa.close())
        loop.run(embedded.close())
        loop.close()


@pytest.fixture(scope="module")
def scratch_opa_url() -> Iterator[str]:
    """A private OPA server for tests that load broken policies into it."""
    from tests._support.servers import opa_server

    with opa_server() as url:
        yield url
