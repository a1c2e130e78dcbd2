"""Policy bundles: the .rego files of one directory, named by their hash.

A bundle's version is a SHA-256 over its files so that an officer, an auditor
and every gateway node can name exactly the same policy. Definition:

    version = "sha256:" + hex(SHA-256( for each file, sorted by path:
                  utf8(path) || 0x00 || SHA-256(content) ))

where ``path`` is the POSIX path relative to the bundle root and ``content``
is the file's bytes. Rego tests (``*_test.rego``) are part of the bundle and
of its version (they were reviewed with it) but are never loaded into an
engine that makes decisions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType

from gateway.errors import ValidationFailed

__all__ = [
    "DECISION_QUERY",
    "MAX_BUNDLE_BYTES",
    "PolicyBundle",
    "audit_version",
    "bundle_version",
]

#: The one query every engine answers.
DECISION_QUERY = "data.accord.exchange.decision"
#: A policy bundle is source code, not data: refuse anything larger (the shipped one is
#: ~40 KB). Half the gateway's default request body limit (``ACCORD_MAX_BODY_BYTES``,
#: 1 MiB), so a bundle at this limit still fits in the JSON body that proposes it:
#: Rego grows ~10% as JSON (each newline, tab, quote or backslash takes two bytes).
MAX_BUNDLE_BYTES = 512 * 1024


def bundle_version(files: Mapping[str, bytes]) -> str:
    """Return the bundle version of ``files`` (relative POSIX path -> bytes)."""
    outer = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.encode("utf-8")):
        outer.update(path.encode("utf-8"))
        outer.update(b"\x00")
        outer.update(hashlib.sha256(files[path]).digest())
    return "sha256:" + outer.hexdigest()


def audit_version(version: str | None) -> str | None:
    """A version as audit entries carry it: the 64 hex digits, without ``sha256:``."""
    return version.removeprefix("sha256:") if version is not None else None


@dataclass(frozen=True)
class PolicyBundle:
    """An immutable set of Rego files and the version naming them."""

    files: Mapping[str, bytes]
    version: str = field(init=False)

    def __post_init__(self) -> None:
        if not self.files:
            raise ValidationFailed("a policy bundle needs at least one .rego file")
        total = 0
        for path, content in self.files.items():
            _verify_path(path)
            total += len(content)
            try:
                content.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValidationFailed(f"{path}: Rego source must be UTF-8") from exc
        if total > MAX_BUNDLE_BYTES:
            raise ValidationFailed(
                f"policy bundle is {total} bytes; the limit is {MAX_BUNDLE_BYTES}"
            )
        if not self.policy_sources():
            raise ValidationFailed("a policy bundle needs at least one non-test .rego file")
        object.__setattr__(self, "files", MappingProxyType(dict(self.files)))
        object.__setattr__(self, "version", bundle_version(self.files))

    @classmethod
    def from_directory(cls, directory: Path | str) -> PolicyBundle:
        """Read every ``*.rego`` file under ``directory`` (recursively)."""
        root = Path(directory)
        if not root.is_dir():
            raise ValidationFailed(f"{root} is not a directory")
        files: dict[str, bytes] = {}
        for path in sorted(root.rglob("*.rego")):
            if path.is_symlink() or not path.is_file():
                raise ValidationFailed(f"{path}: policy files must be regular files")
            files[path.relative_to(root).as_posix()] = path.read_bytes()
        return cls(files)

    @classmethod
    def from_sources(cls, sources: Mapping[str, str]) -> PolicyBundle:
        try:
            return cls({path: text.encode("utf-8") for path, text in sources.items()})
        except UnicodeEncodeError as exc:  # lone surrogates: not text a file can hold
            raise ValidationFailed("Rego source must be valid Unicode text") from exc

    def sources(self) -> dict[str, str]:
        """All files, tests included, as text."""
        return {p: c.decode("utf-8") for p, c in sorted(self.files.items())}

    def policy_sources(self) -> dict[str, str]:
        """The files that make decisions (tests excluded), as text."""
        return {p: t for p, t in self.sources().items() if not p.endswith("_test.rego")}

    def write_to(self, directory: Path) -> None:
        """Materialise the bundle for the ``opa`` command-line checks."""
        for path, content in self.files.items():
            target = directory / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)


def _verify_path(path: str) -> None:
    pure = PurePosixPath(path)
    if (
        not path
        or pure.is_absolute()
        or ".." in pure.parts
        or "\\" in path
        or "\x00" in path
        or pure.suffix != ".rego"
    ):
        raise ValidationFailed(f"{path!r} is not an acceptable policy file path")
