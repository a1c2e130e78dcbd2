"""Automatic checks a proposed policy bundle must pass before anyone may approve it.

1. ``builtins``: only built-ins that both engines implement and that are pure
   and stay inside the process (``FORBIDDEN_BUILTINS``: no clock, randomness,
   network, host runtime or host output): a decision must replay exactly from
   its recorded input. Enforced by ``opa check --capabilities`` with a
   capabilities file reduced to that set, so OPA itself names the offending
   file, line and function.
2. ``opa_check``: ``opa check --strict`` on the files as written, then the
   bundle as the OPA server receives it: merged one module per package by
   ``gateway.policy.opa.merge_modules`` (the code activation uses) and
   compiled. A bundle the merge refuses, or whose merged modules do not
   compile, would fail every exchange once active; it is rejected here.
3. ``regorus``: the bundle loads and evaluates in the embedded engine. This
   check, ``well_formed_decisions`` and ``regorus_vm`` run in an evaluator
   process of their own (``gateway.policy.sandbox.run_job``), stopped after
   the same timeout as ``opa``: a bundle slow on some probe fails ``regorus``.
4. ``well_formed_decisions``: every probe input (``gateway.policy.probes``,
   plus the recorded inputs the service passes) gets a defined decision of the
   shape the gateway acts on (``gateway.policy.decision_check``); whether
   allowed or denied does not matter. Without it a version whose decision is
   undefined or malformed passes and, once active, fails every exchange closed.
5. ``rego_tests``: the bundle's own ``*_test.rego`` pass under ``opa test``.
6. ``regorus_vm`` (reported, never fails the proposal): whether regorus' VM
   decides the probe inputs exactly as its interpreter does. If not, the
   embedded engine will interpret this version (slower, same decisions); the
   officer sees the first differing probe before activating.

Every ``opa`` command runs with that same reduced capabilities file (which also
allows no network host), without the gateway's environment (it holds secrets),
in a scratch home. ``rego_tests`` is **skipped** when the ``builtins`` check
failed: OPA never evaluates a bundle that calls a forbidden built-in (or does
not compile), even in an officer's test. A check that needs the bundle loaded in
regorus is **skipped** when the ``regorus`` check failed. Skipped is reported
and audited as skipped, never as passed, and a report with a skipped check is
not ok: nothing unproven counts towards approval (in practice the failed check
it waited on rejects the bundle anyway).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import regorus

from gateway.errors import PolicyError, ValidationFailed
from gateway.policy.bundle import PolicyBundle
from gateway.policy.decision_check import DecisionSurvey
from gateway.policy.opa import merge_modules, policy_id
from gateway.policy.probes import Probe, synthetic_probes
from gateway.policy.sandbox import JobFailed, run_job

__all__ = [
    "FORBIDDEN_BUILTINS",
    "BundleReport",
    "CheckOutcome",
    "CheckResult",
    "PolicyRejected",
    "allowed_builtins",
    "check_bundle",
    "run_opa",
]

#: Built-ins a policy may not call: an exact name, or a family ending in ``.``.
#: Their result does not follow from the input alone (clock, randomness, the
#: host's runtime and environment), or they act outside the process: network
#: (``http.send``, ``net.*``, a JSON schema's remote ``$ref``, which OPA fetches)
#: and output on the host (``trace``, ``print``). The one list both the
#: ``builtins`` check and every ``opa`` run of the checks obey.
FORBIDDEN_BUILTINS = frozenset(
    {
        "http.",
        "net.",
        "opa.",
        "rand.",
        "time.now_ns",
        "uuid.rfc4122",
        "io.jwt.decode_verify",  # checks expiry against the clock
        "crypto.x509.parse_and_verify_certificates",  # idem
        "crypto.x509.parse_and_verify_certificates_with_options",
        "json.match_schema",
        "json.verify_schema",
        "trace",
        "print",
        "internal.print",
    }
)
_TIMEOUT_S = 120
_NOT_AFTER_BUILTINS = "the builtins check failed; OPA does not run a bundle it refused"
_NOT_LOADED = "regorus cannot load the bundle"


class PolicyRejected(ValidationFailed):
    """A proposed bundle failed an automatic check; ``extra["checks"]`` says which."""

    default_code = "policy_rejected"
    title = "Policy bundle rejected"


CheckOutcome = Literal["passed", "failed", "skipped"]


@dataclass(frozen=True)
class CheckResult:
    """One check's result; ``skipped`` (it did not run) is never ``ok``."""

    name: str
    ok: bool
    detail: str = ""
    skipped: bool = False

    def __post_init__(self) -> None:
        if self.ok and self.skipped:
            raise ValueError("a check that did not run cannot have passed")

    @classmethod
    def skip(cls, name: str, why: str) -> CheckResult:
        return cls(name, False, f"not run: {why}", skipped=True)

    @property
    def outcome(self) -> CheckOutcome:
        return "passed" if self.ok else "skipped" if self.skipped else "failed"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "status": self.outcome, "detail": self.detail}


@dataclass(frozen=True)
class BundleReport:
    version: str
    checks: tuple[CheckResult, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "ok": self.ok,
            "checks": [c.to_json() for c in self.checks],
        }

    def named(self, outcome: CheckOutcome) -> list[str]:
        """Names of the checks with this outcome (what the audit entry lists)."""
        return [c.name for c in self.checks if c.outcome == outcome]

    def verify(self) -> None:
        """Raise ``PolicyRejected`` naming every failed check (then every skipped one)."""
        failed = [c for c in self.checks if c.outcome == "failed"]
        failed += [c for c in self.checks if c.outcome == "skipped"]
        if failed:
            detail = "; ".join(f"{c.name}: {c.detail}" for c in failed)
            raise PolicyRejected(detail, extra={"checks": [c.to_json() for c in self.checks]})


def check_bundle(
    bundle: PolicyBundle, opa_bin: Path, *, recorded: Sequence[Probe] = ()
) -> BundleReport:
    """Run every check (they do not stop at the first failure).

    ``recorded``: decision-log inputs that join the synthetic probes of the
    ``well_formed_decisions`` check (the traffic this gateway actually sees).
    """
    with tempfile.TemporaryDirectory(prefix="accord-policy-") as tmp:
        root = Path(tmp)
        src = root / "bundle"
        bundle.write_to(src)
        home = root / "home"
        home.mkdir()
        caps = root / "capabilities.json"
        caps.write_text(json.dumps(_capabilities(str(opa_bin))), encoding="utf-8")
        opa = _Opa(opa_bin, caps, home)
        builtins = opa.check("builtins", src, src)
        loads, decisions, vm = _regorus_checks(bundle, recorded)
        checks = (
            builtins,
            _opa_check(opa, bundle, root),
            loads,
            decisions,
            _rego_tests(opa, src, gated=not builtins.ok),
            vm,
        )
    return BundleReport(bundle.version, checks)


def allowed_builtins(opa_bin: str) -> frozenset[str]:
    """Names of the built-ins a bundle may use (OPA ∩ regorus − forbidden)."""
    return frozenset(b["name"] for b in _capabilities(opa_bin)["builtins"])


def run_opa(opa_bin: Path, args: Sequence[str], *, home: Path) -> subprocess.CompletedProcess[str]:
    """Run ``opa`` without the gateway's environment: it holds the gateway's
    secrets, and OPA hands its environment to Rego (``opa.runtime().env``).
    ``home`` (a scratch directory) is its HOME, TMPDIR and working directory."""
    return subprocess.run(  # noqa: S603 - our own opa binary, fixed arguments
        [str(opa_bin), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=_TIMEOUT_S,
        env={"HOME": str(home), "TMPDIR": str(home)},
        cwd=home,
    )


def _forbidden(name: str) -> bool:
    return name in FORBIDDEN_BUILTINS or any(
        name.startswith(family) for family in FORBIDDEN_BUILTINS if family.endswith(".")
    )


@cache
def _capabilities(opa_bin: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="accord-opa-") as home:
        proc = run_opa(Path(opa_bin), ["capabilities", "--current"], home=Path(home))
    if proc.returncode != 0:
        raise PolicyError(f"opa capabilities failed: {proc.stderr.strip()}")
    caps: dict[str, Any] = json.loads(proc.stdout)
    caps["builtins"] = [
        b
        for b in caps["builtins"]
        if not _forbidden(b["name"]) and (b.get("infix") or _regorus_has(b))
    ]
    caps["allow_net"] = []  # no host at all, should a network built-in ever slip through
    return caps


def _regorus_has(builtin: dict[str, Any]) -> bool:
    """Probe regorus: it reports an unknown function when the rule is evaluated."""
    decl = builtin.get("decl", {})
    args = ", ".join(f"input.a{i}" for i in range(len(decl.get("args", []))))
    call = f"{builtin['name']}({args})"
    src = f"package probe\nx := {call}\n" if decl.get("result") else f"package probe\nx if {call}\n"
    engine = regorus.Engine()
    try:
        engine.add_policy("probe.rego", src)
        engine.set_input_json("{}")
        engine.eval_rule("data.probe.x")
    except Exception as exc:
        return "could not find function" not in str(exc)
    finally:
        del engine
    return True


@dataclass(frozen=True)
class _Opa:
    """The ``opa`` of one check run: its binary, the reduced capabilities, a scratch home."""

    binary: Path
    capabilities: Path
    home: Path

    def run(self, command: str, *args: str) -> subprocess.CompletedProcess[str]:
        caps = ["--capabilities", str(self.capabilities)]
        return run_opa(self.binary, [command, *caps, *args], home=self.home)

    def check(self, name: str, directory: Path, src: Path, *flags: str) -> CheckResult:
        """``opa check`` of ``directory``; file names in the detail relative to ``src``."""
        try:
            proc = self.run("check", *flags, str(directory))
        except subprocess.TimeoutExpired:
            return CheckResult(name, False, f"timed out after {_TIMEOUT_S} s")
        if proc.returncode == 0:
            return CheckResult(name, True)
        return CheckResult(name, False, _relative(proc.stdout + proc.stderr, src))


def _opa_check(opa: _Opa, bundle: PolicyBundle, root: Path) -> CheckResult:
    """``--strict`` on the files as written, then what the OPA server would be given."""
    src = root / "bundle"
    strict = opa.check("opa_check", src, src, "--strict")
    if not strict.ok:
        return strict
    try:
        modules = merge_modules(bundle.policy_sources())
    except ValidationFailed as exc:
        return CheckResult("opa_check", False, f"cannot be merged for the OPA server: {exc.detail}")
    merged = root / "merged"
    for package, text in modules.items():
        target = merged / f"{policy_id(package)}.rego"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    loaded = opa.check("opa_check", merged, merged)
    if loaded.ok:
        return loaded
    return CheckResult(
        "opa_check", False, f"the modules merged for the OPA server do not compile: {loaded.detail}"
    )


def _regorus_checks(
    bundle: PolicyBundle, recorded: Sequence[Probe]
) -> tuple[CheckResult, CheckResult, CheckResult]:
    """``regorus``, ``well_formed_decisions`` and ``regorus_vm``, run in an evaluator
    process (``gateway.policy.sandbox.run_job``): a bundle slow or memory-hungry on
    some probe costs that process, killed at the timeout, never the gateway.

    ``regorus_vm`` is informational: ok even when the VM disagrees, since the
    engine then interprets.
    """
    args = {
        "sources": [list(pair) for pair in bundle.policy_sources().items()],
        "probes": [[p.label, p.payload] for p in (*synthetic_probes(), *recorded)],
    }
    try:
        out = run_job("checks", args, timeout_s=_TIMEOUT_S)
    except JobFailed as exc:
        return (
            CheckResult("regorus", False, str(exc)),
            CheckResult.skip("well_formed_decisions", _NOT_LOADED),
            CheckResult.skip("regorus_vm", _NOT_LOADED),
        )
    if out["load_error"] is not None:
        return (
            CheckResult("regorus", False, f"regorus cannot load the bundle: {out['load_error']}"),
            CheckResult.skip("well_formed_decisions", _NOT_LOADED),
            CheckResult.skip("regorus_vm", _NOT_LOADED),
        )
    if "survey_error" in out:  # regorus loaded it a moment ago; fail closed all the same
        why = f"regorus cannot load the bundle: {out['survey_error']}"
        decisions = CheckResult("well_formed_decisions", False, why)
    else:
        survey = DecisionSurvey(**out["survey"])
        decisions = CheckResult("well_formed_decisions", survey.ok, survey.describe())
    verdict = "will run on the VM" if out["vm"] else "will be interpreted"
    vm = CheckResult("regorus_vm", True, f"{out['vm_why']}; this version {verdict}")
    return CheckResult("regorus", True), decisions, vm


def _rego_tests(opa: _Opa, src: Path, *, gated: bool) -> CheckResult:
    if gated:
        return CheckResult.skip("rego_tests", _NOT_AFTER_BUILTINS)
    try:
        proc = opa.run("test", "--format=json", str(src))
    except subprocess.TimeoutExpired:
        return CheckResult("rego_tests", False, f"opa test timed out after {_TIMEOUT_S} s")
    try:
        results = json.loads(proc.stdout or "[]")
    except json.JSONDecodeError:
        return CheckResult("rego_tests", False, _relative(proc.stdout + proc.stderr, src))
    if not isinstance(results, list) or (proc.returncode != 0 and not results):
        # The bundle did not even load: OPA names the file and line on stderr.
        return CheckResult("rego_tests", False, _relative(proc.stderr or proc.stdout, src))
    failed = [_test_name(r, src) for r in results if r.get("fail") or r.get("error")]
    if not results:
        return CheckResult("rego_tests", False, "the bundle has no Rego tests")
    if failed or proc.returncode != 0:
        return CheckResult(
            "rego_tests", False, "failed: " + ", ".join(failed or ["(see opa test)"])
        )
    return CheckResult("rego_tests", True, f"{len(results)} passed")


def _test_name(result: dict[str, Any], src: Path) -> str:
    location = result.get("location") or {}
    where = _relative(str(location.get("file", "?")), src)
    if location.get("row"):
        where += f":{location['row']}"
    name = f"{where}: {result.get('package', '')}.{result.get('name')}".replace(": .", ": ")
    error = result.get("error")
    if error:
        message = error.get("message", error) if isinstance(error, dict) else error
        name += f" (error: {message})"
    return name


def _relative(text: str, src: Path) -> str:
    return text.replace(str(src) + "/", "").strip()[:4000]
