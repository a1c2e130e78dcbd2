"""``accord audit …``: the auditor's and operator's command line for the audit log.

Mounted by the gateway's CLI as ``accord audit``; also usable on its own
(``python -m audit.cli``) so an auditor can verify a bundle without the gateway.
Exit status: 0 verified, 1 damage found, 2 bad input or unreachable store. Errors
are one line on stderr, never a traceback.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import click
import sqlalchemy as sa
import typer
from sqlalchemy.exc import SQLAlchemyError

from audit import store
from audit.checkpoint import SignerStateMismatch
from audit.cli_render import err, line, out, print_json, print_report, show_progress
from audit.errors import AuditError
from audit.export import verify_export
from audit.log import AuditLog
from audit.note import NoteSigner, NoteVerifier
from audit.store import engine_for

__all__ = ["audit_app", "main"]

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_DATA_DIR = ".accord-data"
DEFAULT_ORIGIN = "accord.local/audit"

audit_app = typer.Typer(
    name="audit",
    help="Verify, prove, checkpoint, export and witness the tamper-evident audit log.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
_ERROR = ("error", "red")

DbUrl = Annotated[
    str | None,
    typer.Option("--database-url", help="defaults to $ACCORD_DATABASE_URL, else local SQLite"),
]
LogKey = Annotated[
    Path | None,
    typer.Option(
        "--log-key", help="PEM Ed25519 log key; defaults to the gateway's <key dir>/log.pem"
    ),
]
Origin = Annotated[
    str | None, typer.Option("--origin", help="log name (checkpoint origin); $ACCORD_AUDIT_ORIGIN")
]


def _fail_cleanly(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn expected failures into one line on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except SignerStateMismatch as exc:  # damage found, not bad input
            err.print(line(_ERROR, f" ({exc.code}): ", exc.detail))
            raise typer.Exit(1) from None
        except AuditError as exc:
            err.print(line(_ERROR, f" ({exc.code}): ", exc.detail))
        except SQLAlchemyError as exc:
            err.print(line(_ERROR, f": the database is unreachable ({exc.__class__.__name__})"))
        except (OSError, ValueError, UnicodeError) as exc:
            err.print(line(_ERROR, ": ", exc))
        except (typer.Exit, typer.Abort, click.ClickException):
            raise
        except Exception as exc:  # an auditor's tool answers, it does not dump a traceback
            err.print(line(_ERROR, f": unexpected {exc.__class__.__name__}: ", exc))
        raise typer.Exit(2)

    return wrapper


def _db_url(url: str | None) -> str:
    if url or os.environ.get("ACCORD_DATABASE_URL"):
        return url or os.environ["ACCORD_DATABASE_URL"]
    data = Path(os.environ.get("ACCORD_DATA_DIR") or DEFAULT_DATA_DIR)
    return f"sqlite:///{(data / 'accord.db').resolve()}"


def _key_path(path: Path | None) -> Path:
    """The gateway's log key: ``$ACCORD_KEY_DIR`` or ``$ACCORD_DATA_DIR/keys``, as it does."""
    if path is not None:
        return path
    key_dir = os.environ.get("ACCORD_KEY_DIR")
    if key_dir:
        return Path(key_dir) / "log.pem"
    return Path(os.environ.get("ACCORD_DATA_DIR") or DEFAULT_DATA_DIR) / "keys" / "log.pem"


def _env_witness_vkeys() -> list[str]:
    """The gateway's configured witnesses (``$ACCORD_WITNESS_VKEYS``, a JSON list), as it does."""
    raw = os.environ.get("ACCORD_WITNESS_VKEYS", "").strip()
    if not raw:
        return []
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ValueError("ACCORD_WITNESS_VKEYS must be a JSON list of vkeys") from exc
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("ACCORD_WITNESS_VKEYS must be a JSON list of vkeys")
    return value


def _origin(origin: str | None) -> str:
    return origin or os.environ.get("ACCORD_AUDIT_ORIGIN") or DEFAULT_ORIGIN


def _signer(path: Path, origin: str | None) -> NoteSigner:
    return NoteSigner.from_pem(_origin(origin), path.read_bytes())


def _state_path(key: Path) -> Path:
    """Where the signer keeps the last checkpoint the key signed (``SignerState``)."""
    return key.with_name(key.name + ".signed")


def _entry_count(log: AuditLog) -> int:
    """How many entries a verification will read, for its progress bar: from the
    entries themselves, so a damaged head row is reported, not tripped over."""
    with log.engine.connect() as conn:
        last = conn.execute(sa.select(sa.func.max(store.entries.c.seq))).scalar()
    return 0 if last is None else int(last) + 1


def _vkey(value: str) -> NoteVerifier:
    """A vkey given inline or as a file holding one."""
    p = Path(value)
    if p.is_file():
        return NoteVerifier.from_vkey(p.read_text("utf-8").strip())
    if "+" not in value and ("/" in value or p.suffix):  # meant as a file: say so
        raise AuditError(f"no verifier key file {value}", code="audit_bad_key")
    return NoteVerifier.from_vkey(value)


@contextmanager
def _open_log(
    url: str | None,
    key: Path | None = None,
    origin: str | None = None,
    witnesses: Sequence[str] = (),
) -> Iterator[AuditLog]:
    signer = _signer(key, origin) if key is not None and key.exists() else None
    engine = engine_for(_db_url(url))
    log = AuditLog(
        engine,
        node="cli",
        signer=signer,
        witnesses=[_vkey(w) for w in witnesses],
        signer_state=_state_path(key) if signer is not None and key is not None else None,
    )
    try:
        yield log
    finally:
        log.close()
        engine.dispose()


@audit_app.command()
@_fail_cleanly
def verify(
    target: Annotated[str | None, typer.Argument(help="database URL or export directory")] = None,
    database_url: DbUrl = None,
    log_vkey: Annotated[
        str | None, typer.Option("--log-vkey", help="trusted log verifier key (or file)")
    ] = None,
    log_key: LogKey = None,
    origin: Origin = None,
    witness_vkey: Annotated[
        list[str], typer.Option("--witness-vkey", help="trusted witness key (repeatable)")
    ] = [],  # noqa: B006 - typer reads the default, never mutates it
    checkpoint: Annotated[
        list[Path], typer.Option("--checkpoint", help="a checkpoint note you hold (repeatable)")
    ] = [],  # noqa: B006
    signer_state: Annotated[
        list[Path],
        typer.Option(
            "--signer-state",
            help="a gateway node's record of the last checkpoint its log key signed "
            "(<key>.signed; repeatable); default: the one beside the log key, if any",
        ),
    ] = [],  # noqa: B006
    witness_quorum: Annotated[
        int,
        typer.Option(
            "--witness-quorum",
            min=0,
            help="fail (unwitnessed) unless this many of the pinned witnesses cosigned a "
            "checkpoint",
        ),
    ] = 0,
    hashes_only: Annotated[bool, typer.Option(help="skip JSON and schema checks")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs",
            min=1,
            help="processes hashing an export directory (default: one a core, at most 8)",
        ),
    ] = None,
) -> None:
    """Recompute every leaf, chain link, tree root and signature; exit 1 on damage."""
    if witness_quorum and not witness_vkey and not _env_witness_vkeys():
        raise ValueError("--witness-quorum needs the witnesses' keys (--witness-vkey)")
    trusted = _vkey(log_vkey) if log_vkey else None
    witnesses = [_vkey(w) for w in witness_vkey] or None
    extra = [p.read_text("utf-8") for p in checkpoint]
    states = [p.read_text("utf-8") for p in signer_state]
    if target is not None and Path(target).is_dir():
        manifest = Path(target) / "manifest.json"
        total = None
        if manifest.is_file():
            try:
                m = json.loads(manifest.read_bytes()[: 1 << 20])
                total = int(m["to_seq"]) - int(m["from_seq"])
            except (ValueError, KeyError, TypeError):
                total = None
        with show_progress(total, "verifying") as progress:
            report = verify_export(
                target,
                log_key=trusted,
                witness_keys=witnesses,
                extra_checkpoints=extra,
                full=not hashes_only,
                progress=progress,
                jobs=jobs,
            )
        report.check_witnesses(witnesses or [], witness_quorum)
    else:
        if target is not None and "://" not in target:  # a path, and not a directory
            raise AuditError(
                f"no export directory {target} (a database is given as a URL)",
                code="audit_not_found",
            )
        url = target or database_url
        key = _key_path(log_key)
        notes: list[str] = []
        if trusted is None and key.exists():
            # The operator's own key file: a log rewritten and re-signed with a new
            # key in its place would verify. Only a pinned key (--log-vkey) says
            # the checkpoints are the ones published.
            trusted = _signer(key, origin).verifier()
            notes.append(f"log key taken from {key}, not pinned: compare it with the published key")
        if witnesses is None:
            witnesses = [_vkey(w) for w in _env_witness_vkeys()] or None
            if witnesses:
                notes.append("witness keys taken from ACCORD_WITNESS_VKEYS, not pinned")
        if not signer_state and _state_path(key).is_file():
            # Read before the store: what was signed by then is in the store by then.
            states.append(_state_path(key).read_text("utf-8"))
        with _open_log(url) as log, show_progress(_entry_count(log), "verifying") as progress:
            report = log.verify(
                log_key=trusted,
                witness_keys=witnesses or [],
                extra_checkpoints=extra,
                signer_states=states,
                witness_quorum=witness_quorum,
                progress=progress,
            )
        report.warnings[:0] = notes
    print_report(report, as_json)
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("checkpoint")
@_fail_cleanly
def checkpoint_cmd(
    database_url: DbUrl = None,
    log_key: LogKey = None,
    origin: Origin = None,
    witness: Annotated[
        list[str], typer.Option("--witness", help="witness URL to ask for a cosignature")
    ] = [],  # noqa: B006
    witness_vkey: Annotated[
        list[str],
        typer.Option(
            "--witness-vkey",
            help="verifier key of a witness whose cosignatures to keep (without it a --witness "
            "cosignature is dropped): name+keyid+base64, the C2SP signed-note vkey `accord audit "
            "witness` prints, or a file holding it (repeatable)",
        ),
    ] = [],  # noqa: B006
) -> None:
    """Sign a checkpoint of the current tree (and send it to witnesses)."""
    key = _key_path(log_key)
    if not key.exists():
        raise AuditError(f"log key {key} not found", code="audit_no_signer")
    with _open_log(database_url, key, origin, witness_vkey) as log:
        note = log.checkpoint()
        if witness:
            for url, result in log.send_to_witnesses(witness).items():
                err.print(line(url, ": ", result))
            note = log.latest_checkpoint() or note
    sys.stdout.write(note)


@audit_app.command()
@_fail_cleanly
def prove(
    seq: Annotated[int | None, typer.Argument(help="entry sequence number")] = None,
    exchange: Annotated[str | None, typer.Option("--exchange", help="exchange id")] = None,
    tree_size: Annotated[int | None, typer.Option(help="prove against this size")] = None,
    database_url: DbUrl = None,
) -> None:
    """Print inclusion proofs (JSON) for an entry or every entry of an exchange."""
    if (seq is None) == (exchange is None):
        raise ValueError("give exactly one of SEQ or --exchange")
    with _open_log(database_url) as log:
        seqs = (
            [seq] if seq is not None else [e.seq for e in log.entries_by_exchange(exchange or "")]
        )
        if not seqs:
            raise AuditError(f"no entries for exchange {exchange!r}", code="audit_not_found")
        proofs = []
        for s in seqs:
            p = log.inclusion_proof(s, tree_size)
            p.verify()
            proofs.append(p.to_json())
    print_json(proofs[0] if seq is not None else proofs)


@audit_app.command()
@_fail_cleanly
def consistency(
    old: Annotated[int, typer.Argument(help="older tree size")],
    new: Annotated[int, typer.Argument(help="newer tree size")],
    database_url: DbUrl = None,
) -> None:
    """Print the RFC 9162 consistency proof between two tree sizes (JSON)."""
    with _open_log(database_url) as log:
        proof = log.consistency_proof(old, new)
        proof.verify()
    print_json(proof.to_json())


@audit_app.command()
@_fail_cleanly
def export(
    directory: Annotated[Path, typer.Argument(help="empty or new directory")],
    from_seq: Annotated[int, typer.Option("--from", help="first seq (inclusive)")] = 0,
    to_seq: Annotated[
        int | None, typer.Option("--to", help="end seq (exclusive); default: the log size")
    ] = None,
    database_url: DbUrl = None,
    log_key: LogKey = None,
    origin: Origin = None,
    witness_vkey: Annotated[
        list[str],
        typer.Option(
            "--witness-vkey",
            help="verifier key of a witness, written to the bundle's keys/witnesses.vkeys: "
            "name+keyid+base64, the C2SP signed-note vkey `accord audit witness` prints, or a "
            "file holding it (repeatable)",
        ),
    ] = [],  # noqa: B006
) -> None:
    """Write entries, hashes, checkpoints, proofs, keys and a README for an auditor."""
    with _open_log(database_url, _key_path(log_key), origin, witness_vkey) as log:
        end = log.head().size if to_seq is None else to_seq
        log.export(from_seq, end, directory)
    out.print(line(f"exported [{from_seq}, {end}) to ", directory))


@audit_app.command()
@_fail_cleanly
def witness(
    key: Annotated[Path, typer.Option("--key", help="PEM Ed25519 private key of the witness")],
    name: Annotated[str, typer.Option("--name", help="witness key name, e.g. witness.example/w1")],
    log_vkey: Annotated[
        list[str], typer.Option("--log-vkey", help="vkey of a log to witness (repeatable)")
    ],
    state: Annotated[Path, typer.Option(help="SQLite file keeping what was seen")] = Path(
        ".accord-data/witness.db"
    ),
    host: str = "127.0.0.1",
    port: int = 8090,
) -> None:
    """Run a c2sp.org/tlog-witness witness that cosigns consistent checkpoints."""
    from audit.checkpoint import Cosigner
    from audit.note import load_private_key_pem
    from audit.witness import Witness, make_server

    state.parent.mkdir(parents=True, exist_ok=True)
    cosigner = Cosigner(name, load_private_key_pem(key.read_bytes()))
    w = Witness(cosigner, [_vkey(v) for v in log_vkey], state)
    server = make_server(w, host, port)
    err.print(
        line("witness ", cosigner.verifier().vkey(), f" on http://{host}:{server.server_port}")
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> Any:
    """Run the audit CLI on its own (``python -m audit.cli``)."""
    return audit_app(args=argv)


if __name__ == "__main__":
    main()
