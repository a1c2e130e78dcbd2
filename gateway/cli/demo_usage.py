"""What ``accord demo`` prints: a Python client example and a ``curl`` call to try it.

The Python example must run as printed. It is written to a file in the data
directory and printed flush left, so running the file, pasting the lines into a
file or pasting them into an interactive interpreter all work. It names the
project's own interpreter, as the ``curl`` call names the project's ``accord``:
a system ``python3`` has no ``gateway`` module.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from gateway.settings import Settings

__all__ = ["EXAMPLE_FILE", "python_example", "usage_examples", "write_python_example"]

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
