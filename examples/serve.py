"""Start one sample department system: ``python -m examples.serve NAME --port N``.

``civil_registry`` and ``tax_authority`` are HTTP services (uvicorn on
loopback); ``health_insurer`` seeds its SQL database (a SQLite file in the
data dir, or ``--db-url`` for PostgreSQL) and ``welfare_office`` writes its
nightly CSV export into the drop folder; those two print where the data is
and exit, because their "system" is the database or folder itself.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["NAMES", "main"]

NAMES = ("civil_registry", "health_insurer", "tax_authority", "welfare_office")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m examples.serve")
    ap.add_argument("name", choices=NAMES)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--data-dir", type=Path, default=Path(".accord-data/examples"))
    ap.add_argument("--token", default="civil-demo-token", help="civil registry bearer token")
    ap.add_argument("--db-url", default=None, help="health insurer database URL")
    args = ap.parse_args(argv)
    data: Path = args.data_dir.resolve()
    data.mkdir(parents=True, exist_ok=True)

    if args.name == "health_insurer":
        from examples.health_insurer.db import seed

        print(seed(args.db_url or f"sqlite:///{data / 'health_insurer.db'}"), flush=True)
        return 0
    if args.name == "welfare_office":
        from examples.welfare_office.export import write_export

        print(write_export(data / "welfare_drop").parent, flush=True)
        return 0

    import uvicorn

    if not args.port:
        ap.error("--port is required for HTTP departments")
    from starlette.applications import Starlette

    app: Starlette
    if args.name == "civil_registry":
        from examples.civil_registry.app import create_app

        app = create_app(data / "civil_registry.db", args.token)
    else:
        from examples.tax_authority.app import create_app as create_tax_app

        app = create_tax_app()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
