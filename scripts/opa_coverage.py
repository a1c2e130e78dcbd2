"""Fail the test command when the Rego tests cover too little of the policies.

Usage: ``python scripts/opa_coverage.py OPA_BIN POLICY_DIR MIN_PERCENT``.
Runs ``opa test --coverage --format=json`` with the real binary, prints the
overall and per-file percentages, and exits non-zero below the minimum (or when
the tests themselves fail), so coverage is a gate and not a number to read.
"""

from __future__ import annotations

import json
import subprocess
import sys

__all__ = ["main"]


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: opa_coverage.py OPA_BIN POLICY_DIR MIN_PERCENT", file=sys.stderr)
        return 2
    opa_bin, policy_dir, minimum_text = argv
    minimum = float(minimum_text)
    proc = subprocess.run(  # noqa: S603 - the operator names the opa binary
        [opa_bin, "test", "--coverage", "--format=json", policy_dir],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        print(proc.stdout[-4000:], proc.stderr[-4000:], sep="\n", file=sys.stderr)
        print("opa test failed; coverage not measured", file=sys.stderr)
        return 1
    report = json.loads(proc.stdout)
    for path, info in sorted(report.get("files", {}).items()):
        print(f"  {info.get('coverage', 0.0):6.2f}%  {path}")
    coverage = float(report.get("coverage", 0.0))
    print(f"Rego coverage: {coverage:.2f}% (minimum {minimum:.2f}%)")
    if coverage < minimum:
        print("Rego coverage below the minimum", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
