"""What ``accord demo`` prints: a Python client example and a ``curl`` call to try it.

The Python example must run as printed. It is written to a file in the data
directory and printed flush left, so running the file, pasting the lines into a
file or pasting them into an interactive interpreter all work. It names the
project's own interpreter, as the ``curl`` call names the project's ``accord``:
a system ``python3`` has no ``gateway`` module.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

from gateway.services import opa_binary
from gateway.settings import Settings

__all__ = [
    "EXAMPLE_FILE",
    "OPA_INSTALL",
    "PROJECT_OPA",
    "policy_checks_notice",
    "python_example",
    "usage_examples",
    "write_python_example",
]

#: Where the test command builds ``opa`` and the gateway looks for it first.
PROJECT_OPA = Path(__file__).resolve().parents[2] / ".tools" / "bin" / "opa"
#: How to build that ``opa`` (the version the test command builds).
OPA_INSTALL = (
    f"GOBIN={shlex.quote(str(PROJECT_OPA.parent))}"
    " go install github.com/open-policy-agent/opa@v1.22.3"
)

#: The example's file name under the data directory.
EXAMPLE_FILE = "demo_exchange.py"


def _subject() -> str:
    from examples.synth import people

    return people()[0].person_id  # the sample data is deterministic


def _key_file(settings: Settings) -> Path:
    return (settings.data_dir / "demo-keys" / "welfare-office.pem").resolve()


def _venv_bin(name: str) -> str:
    """A program beside this interpreter (in the project's ``.venv/bin``), by its full path."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


def python_example(settings: Settings, base_url: str) -> str:
    """The welfare office's person lookup with the Python client, as a script.

    No line is indented outside a bracket, and no bracket holds a blank line,
    so an interactive interpreter reads it as it reads the file.
    """
    q = json.dumps  # a JSON string is a valid Python string literal
    return f"""\
from gateway.client import AccordClient
from gateway.jose import load_private_key_pem

client = AccordClient(
    {q(base_url)},
    department="welfare-office",
    system="benefits-app",
    key=load_private_key_pem({q(str(_key_file(settings)))}),
)
answer = client.exchange(
    agreement="welfare-person-lookup",
    dataset="person",
    purpose="benefit-eligibility",
    query={{"kind": "record", "subject": {q(_subject())}}},
)
print(answer.records)
print(answer.receipt_claims)  # the receipt is verified before you see it
client.close()
"""


def write_python_example(settings: Settings, base_url: str) -> Path:
    """Write :func:`python_example` to the data directory; returns its absolute path."""
    path = (settings.data_dir / EXAMPLE_FILE).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(python_example(settings, base_url), encoding="utf-8")
    return path


def policy_checks_notice(settings: Settings, *, project_opa: Path | None = None) -> str:
    """Whether the demo can check policy proposals, and how to make it able to.

    Without an ``opa`` binary a proposal is stored but never checked, so it stays
    ``draft`` and cannot be approved: the banner says so before anyone tries.
    """
    found = opa_binary(settings.opa_bin, project_opa=project_opa or PROJECT_OPA)
    if found is not None and os.access(found, os.X_OK):
        return f"Policy proposals are checked with {found}."
    where = (
        f"ACCORD_OPA_BIN={found} is not an executable file"
        if found is not None
        else "no opa binary found (ACCORD_OPA_BIN, .tools/bin/opa, or opa on PATH)"
    )
    return f"""\
WARNING: policy proposals cannot be checked: {where}.
  A proposed policy stays `draft` and cannot be approved or activated.
  To get opa (needs Go), then restart the demo:
    {OPA_INSTALL}
  or run the test command once (scripts/test builds it into .tools/bin)."""


def usage_examples(settings: Settings, base_url: str, example_file: Path) -> str:
    """The text ``accord demo`` prints once the demo is seeded."""
    python = sys.executable or "python3"
    accord = _venv_bin("accord")
    key = shlex.quote(str(_key_file(settings)))
    body = json.dumps(
        {
            "agreement": "welfare-person-lookup",
            "dataset": "person",
            "purpose": "benefit-eligibility",
            "query": {"kind": "record", "subject": _subject()},
        }
    )
    return f"""
{policy_checks_notice(settings)}

Python, with the project's interpreter (a system python3 has no `gateway` module).
Run the example written to {example_file}:

  {shlex.quote(python)} {shlex.quote(str(example_file))}

or start {python} and paste these lines:

{python_example(settings, base_url)}
curl
  echo '{body}' > /tmp/req.json
  TOKEN=$({shlex.quote(accord)} token request --department welfare-office \\
          --system benefits-app --key {key} --body /tmp/req.json)
  curl -s {base_url}/v1/exchanges -H "Authorization: Bearer $TOKEN" \\
       -H 'Content-Type: application/json' --data-binary @/tmp/req.json
"""
