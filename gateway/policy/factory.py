"""Build the configured policy engine (called from the app lifespan, never at import)."""

from __future__ import annotations

from gateway.policy.bundle import PolicyBundle
from gateway.policy.embedded import embedded_engine
from gateway.policy.engine import PolicyEngine
from gateway.policy.opa import OpaEngine
from gateway.settings import Settings

__all__ = ["open_engine"]


async def open_engine(settings: Settings, bundle: PolicyBundle | None = None) -> PolicyEngine:
    """Create the engine ``ACCORD_POLICY_ENGINE`` names and load ``bundle``.

    ``bundle`` should be the active version from the policy store
    (``PolicyService.active_bundle()``; ``PolicyRuntime.open`` does this); without
    one, the files in ``ACCORD_POLICY_DIR`` are loaded.
    """
    if bundle is None:
        bundle = PolicyBundle.from_directory(settings.policy_dir)
    engine: PolicyEngine
    if settings.policy_engine == "opa":
        engine = await OpaEngine.connect(settings.opa_url, timeout_ms=settings.policy_timeout_ms)
    else:
        engine = embedded_engine(settings)
    try:
        await engine.load(bundle)
    except BaseException:
        await engine.close()
        raise
    return engine
