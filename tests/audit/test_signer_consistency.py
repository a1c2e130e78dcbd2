"""The log key signs only trees that extend what it signed last (``SignerState``).

Someone who can write the store but cannot read the log key must not get the
gateway to sign a rewritten history (after deleting the checkpoint rows that
would expose it) or a second root for a size it already signed. The signer
keeps its last signed note beside the key (``<key>.signed``) and in memory, and
refuses, records and reports a store that is not a consistent extension.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import AuditLog, engine_for, verify_checkpoint
from audit.checkpoint import SignerStateMismatch, parse_checkpoint
from audit.dbverify import verify_database
from audit.entry import ZERO_CHAIN
from audit.errors import AuditUnavailable
from audit.health import health_of
from audit.note import NoteSigner, parse_note
from audit.status import VerifyStatus, poll_damage
from tests.audit.conftest import ORIGIN, LogFactory, entry, log_signer
from tests.audit.forge import forge_log

_TABLES = ("audit_cosignatures", "audit_checkpoints", "audit_nodes", "audit_entries")


def sealed(url: str, entries: list[dict[str, object]]) -> list[bytes]:
    """Entry bytes as the appender seals them, written on a scratch log."""
    log = AuditLog(engine_for(url), checkpoint_every=0, checkpoint_interval_s=0)
    log.create_schema()
    try:
        for e in entries:
            log.append(e)
        return [e.entry_bytes for e in log.entries(0, len(entries))]
    finally:
        log.close()
        log.engine.dispose()


def rewrite_store(url: str, datas: list[bytes]) -> None:
    """What a DBA without the log key can do: drop the append-only triggers, delete
    every entry, node and checkpoint row, and write a self-consistent history."""
    engine = engine_for(url)
    try:
        with engine.begin() as conn:
            if engine.dialect.name == "sqlite":
                for (name,) in conn.exec_driver_sql(
                    "SELECT name FROM sqlite_master WHERE type='trigger'"
                ).all():
                    conn.exec_driver_sql(f"DROP TRIGGER {name}")
            else:
                for t in (*_TABLES, "audit_head"):
                    conn.exec_driver_sql(f"ALTER TABLE {t} DISABLE TRIGGER USER")
            for t in _TABLES:
                conn.exec_driver_sql(f"DELETE FROM {t}")
            conn.execute(
                sa.text("UPDATE audit_head SET size = 0, chain_hash = :z, frontier = :f"),
                {"z": ZERO_CHAIN, "f": b""},
            )
        forge_log(engine, datas, None)  # recreates the triggers, as they were
    finally:
        engine.dispose()


def honest(make_log: LogFactory, url: str, state: Path, n: int) -> AuditLog:
    log = make_log(url, signer_state=state)
    for i in range(n):
        log.append(entry(i))
    return log


def restart(make_log: LogFactory, url: str, state: Path) -> AuditLog:
    """A new gateway process on the same store and key directory."""
    return make_log(url, signer_state=state)


def checkpoint_rows(log: AuditLog) -> list[int]:
    with log.engine.connect() as conn:
        return [int(r[0]) for r in conn.exec_driver_sql("SELECT size FROM audit_checkpoints")]


def test_first_signature_trusts_the_store_once_and_records_a_verifiable_note(
    sqlite_url: str, make_log: LogFactory, tmp_path: Path
) -> None:
    state = tmp_path / "keys" / "log.pem.signed"
    state.parent.mkdir()
    log = honest(make_log, sqlite_url, state, 10)
    note = log.checkpoint()
    assert state.read_text() == note
    cp = verify_checkpoint(state.read_text(), log_signer().verifier())
    assert (cp.size, cp.root) == (10, log.head().root)
    for i in range(10, 25):
        log.append(entry(i))
    log.checkpoint()
    assert parse_checkpoint(parse_note(state.read_text()).text).size == 25
    # A restarted process continues from the file.
    again = restart(make_log, sqlite_url, state)
    again.append(entry(25))
    assert parse_checkpoint(parse_note(again.checkpoint()).text).size == 26
    assert again.verify().ok


def test_history_rewritten_and_checkpoint_rows_deleted_is_not_signed(
    sqlite_url: str, make_log: LogFactory, tmp_path: Path
) -> None:
    """Attack (a): the store is rewritten consistently and every checkpoint row that
    would expose it deleted; the gateway must not sign the rewrite with the real key."""
    state = tmp_path / "log.pem.signed"
    log = honest(make_log, sqlite_url, state, 20)
    signed = log.checkpoint()
    forged = sealed(f"sqlite:///{tmp_path / 'scratch.db'}", [entry(i + 300) for i in range(24)])
    log.close()
    log.engine.dispose()
    rewrite_store(sqlite_url, forged)

    for signer in (log, restart(make_log, sqlite_url, state)):  # same process, and restarted
        with pytest.raises(SignerStateMismatch) as exc:
            signer.checkpoint()
        assert exc.value.code == "audit_signer_state_mismatch"
        assert checkpoint_rows(signer) == []  # nothing was signed or stored
        assert state.read_text() == signed  # the record did not move
        report = signer.verify()
        assert not report.ok and report.kind == "signer_state_mismatch", report
        assert signer.signed_state.incident is not None
        # And the process appends nothing more onto the store it refused to sign.
        with pytest.raises(AuditUnavailable) as stopped:
            signer.append(entry(99))
        assert stopped.value.code == "audit_log_damaged"

    # The auditor's verification with the published key pinned reports it too.
    report = verify_database(
        engine_for(sqlite_url), log_key=log_signer().verifier(), signer_states=[state.read_text()]
    )
    assert not report.ok and report.kind == "signer_state_mismatch"
    assert report.damage is not None and report.damage.end == 20


def test_a_second_root_for_a_signed_size_is_not_signed(
    sqlite_url: str, make_log: LogFactory, tmp_path: Path
) -> None:
    """Attack (b): a fork at a size already signed. The store's tree of 20 entries is
    replaced by another of 20 (its last five entries changed) and the row deleted."""
    state = tmp_path / "log.pem.signed"
    log = honest(make_log, sqlite_url, state, 20)
    first = log.checkpoint()
    datas = [e.entry_bytes for e in log.entries(0, 20)]
    other = sealed(
        f"sqlite:///{tmp_path / 'scratch.db'}",
        [entry(i) for i in range(15)] + [entry(i + 500) for i in range(5)],
    )
    log.close()
    log.engine.dispose()
    rewrite_store(sqlite_url, datas[:15] + other[15:])

    node = restart(make_log, sqlite_url, state)
    assert (
        node.head().size == 20 and node.head().root != parse_checkpoint(parse_note(first).text).root
    )
    with pytest.raises(SignerStateMismatch, match="does not extend the tree of 20"):
        node.checkpoint()
    assert checkpoint_rows(node) == []
    snap = VerifyStatus(node).get()
    assert snap.state == "damaged"
    assert snap.report is not None and snap.report.kind == "signer_state_mismatch"


def test_a_store_cut_below_a_signed_size_is_not_signed(
    sqlite_url: str, make_log: LogFactory, tmp_path: Path
) -> None:
    state = tmp_path / "log.pem.signed"
    log = honest(make_log, sqlite_url, state, 20)
    log.checkpoint()
    datas = [e.entry_bytes for e in log.entries(0, 12)]
    log.close()
    log.engine.dispose()
    rewrite_store(sqlite_url, datas)
    node = restart(make_log, sqlite_url, state)
    with pytest.raises(SignerStateMismatch, match="has 12 entries, but the log key signed 20"):
        node.checkpoint()
    report = node.verify()
    assert report.kind == "signer_state_mismatch" and report.damage is not None
    assert report.damage.seq == 12


def test_an_unreadable_record_refuses_rather_than_trusting_the_store_again(
    sqlite_url: str, make_log: LogFactory, tmp_path: Path
) -> None:
    state = tmp_path / "log.pem.signed"
    log = honest(make_log, sqlite_url, state, 5)
    log.checkpoint()
    state.write_text("not a note\n")
    node = restart(make_log, sqlite_url, state)
    with pytest.raises(SignerStateMismatch, match="does not hold a checkpoint of this log"):
        node.checkpoint()


def test_a_rotated_key_continues_from_what_the_old_key_signed(
    sqlite_url: str, make_log: LogFactory, tmp_path: Path
) -> None:
    state = tmp_path / "log.pem.signed"
    log = honest(make_log, sqlite_url, state, 10)
    log.checkpoint()
    new_key = NoteSigner(ORIGIN, Ed25519PrivateKey.from_private_bytes(bytes(range(7, 39))))
    rotated = make_log(sqlite_url, signer=new_key, signer_state=state)
    rotated.append(entry(10))
    note = rotated.checkpoint()  # an extension: signed with the new key
    assert verify_checkpoint(note, new_key.verifier()).size == 11
    assert state.read_text() == note

    # A fork behind the old key's record is refused for the new key as well.
    old_state = tmp_path / "old.signed"
    old_state.write_text(log.checkpoints()[0])
    datas = [e.entry_bytes for e in log.entries(0, 5)]
    rotated.close()
    rotated.engine.dispose()
    log.close()
    log.engine.dispose()
    forged = sealed(f"sqlite:///{tmp_path / 'scratch.db'}", [entry(i + 70) for i in range(11)])
    rewrite_store(sqlite_url, datas + forged[5:])
    again = make_log(sqlite_url, signer=new_key, signer_state=old_state)
    with pytest.raises(SignerStateMismatch):
        again.checkpoint()


def test_nodes_sharing_a_store_sign_in_turn_and_each_only_moves_forward(
    pg_url: str, make_log: LogFactory, tmp_path: Path
) -> None:
    """Two gateway nodes on one PostgreSQL database, each with its own record."""
    a_state, b_state = tmp_path / "a.signed", tmp_path / "b.signed"
    a = make_log(pg_url, node="gw-a", signer_state=a_state)
    b = make_log(pg_url, node="gw-b", signer_state=b_state)
    for i in range(10):
        (a if i % 2 else b).append(entry(i))
    a.checkpoint()
    for i in range(10, 20):
        b.append(entry(i))
    b.checkpoint()  # b's first: held to a's stored checkpoint too
    a.append(entry(20))
    assert parse_checkpoint(parse_note(a.checkpoint()).text).size == 21
    assert b.checkpoint() == a.checkpoint()  # same tree, the same stored note
    assert sorted(checkpoint_rows(a)) == [10, 20, 21]

    # A DBA rewrites entries after 10, deletes every checkpoint row but the first,
    # and waits for a node whose own record is older than the rewrite: it cannot
    # know. The node whose record covers the rewrite refuses at its next turn.
    datas = [e.entry_bytes for e in a.entries(0, 10)]
    forged = sealed(f"sqlite:///{tmp_path / 'scratch.db'}", [entry(i + 90) for i in range(24)])
    c_state = tmp_path / "c.signed"
    c_state.write_text(a.checkpoints()[0])  # a third node, which signed only 10
    for log in (a, b):
        log.close()
        log.engine.dispose()
    rewrite_store(pg_url, datas + forged[10:])
    c = make_log(pg_url, node="gw-c", signer_state=c_state)
    c.checkpoint()
    a2 = make_log(pg_url, node="gw-a", signer_state=a_state)
    with pytest.raises(SignerStateMismatch):
        a2.checkpoint()
    report = a2.verify()
    assert not report.ok and report.kind == "signer_state_mismatch"


def test_a_signed_checkpoint_in_the_store_binds_a_node_without_a_record(
    sqlite_url: str, make_log: LogFactory, tmp_path: Path
) -> None:
    """First use trusts the store, but not against a checkpoint the key signed: a
    stored note the key signed (the store cannot forge one) must still hold."""
    log = honest(make_log, sqlite_url, tmp_path / "a.signed", 8)
    log.checkpoint()
    datas = [e.entry_bytes for e in log.entries(0, 8)]
    note = log.checkpoints()[0]
    log.close()
    log.engine.dispose()
    forged = sealed(f"sqlite:///{tmp_path / 'scratch.db'}", [entry(i + 40) for i in range(12)])
    rewrite_store(sqlite_url, datas[:4] + forged[4:])
    engine = engine_for(sqlite_url)
    with engine.begin() as conn:  # the real note for 8 is kept (or put back)
        conn.execute(
            sa.text("INSERT INTO audit_checkpoints (size, root, note, ts) VALUES (8, :r, :n, 't')"),
            {"r": base64.b64decode(parse_note(note).text.split("\n")[2]), "n": note},
        )
    engine.dispose()
    fresh = make_log(sqlite_url, signer_state=tmp_path / "fresh.signed")
    with pytest.raises(SignerStateMismatch):
        fresh.checkpoint()
    assert not (tmp_path / "fresh.signed").exists()


def _as_node(url: str, node: str) -> str:
    """The database as another gateway node reaches it. A node is a process with its
    own ``LogHealth``, which is keyed by the URL: naming the node in the URL (as its
    ``application_name``) gives it one here, in one test process."""
    u = sa.make_url(url).update_query_dict({"application_name": node})
    return u.render_as_string(hide_password=False)


def _damage_rows(engine: sa.Engine) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql("SELECT kind, node FROM audit_damage")]


def test_a_refusal_to_sign_stops_every_node_not_only_the_refuser(
    pg_url: str, make_log: LogFactory, tmp_path: Path
) -> None:
    """Two nodes on one PostgreSQL database. A DBA cuts the log below what node A's
    key signed; A refuses to sign. B, which verified nothing and signs nothing,
    must stop appending at its next read of the damage marker, not go on chaining
    entries onto the store A refused."""
    a = make_log(pg_url, node="gw-a", signer_state=tmp_path / "a.signed")
    b = make_log(_as_node(pg_url, "gw-b"), node="gw-b", signer_state=tmp_path / "b.signed")
    assert health_of(a.engine) is not health_of(b.engine)
    for i in range(20):
        (a if i % 2 else b).append(entry(i))
    a.checkpoint()
    rewrite_store(pg_url, [e.entry_bytes for e in a.entries(0, 12)])
    poll_damage(b.engine)
    b.append(entry(12))  # nothing says the store is damaged yet

    with pytest.raises(SignerStateMismatch):
        a.checkpoint()
    assert _damage_rows(a.engine) == [("signer_state_mismatch", "gw-a")]
    size = a.head().size
    poll_damage(b.engine)  # what B's exchange path and readiness do every few seconds
    for node in (a, b):
        with pytest.raises(AuditUnavailable) as stopped:
            node.append(entry(13))
        assert stopped.value.code == "audit_log_damaged"
        assert "signer_state_mismatch" in stopped.value.detail
    assert a.head().size == size


def test_a_refusal_to_sign_stops_the_refuser_even_when_the_marker_cannot_be_written(
    sqlite_url: str, make_log: LogFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "log.pem.signed"
    log = honest(make_log, sqlite_url, state, 20)
    log.checkpoint()
    datas = [e.entry_bytes for e in log.entries(0, 12)]
    log.close()
    log.engine.dispose()
    rewrite_store(sqlite_url, datas)
    node = restart(make_log, sqlite_url, state)
    with node.engine.begin() as conn:  # the database takes no marker (full, read-only…)
        conn.exec_driver_sql(
            "CREATE TRIGGER test_refuse_marker BEFORE INSERT ON audit_damage "
            "BEGIN SELECT RAISE(ABORT, 'the disk is full'); END"
        )
    with caplog.at_level("CRITICAL", logger="audit.cadence"), pytest.raises(SignerStateMismatch):
        node.checkpoint()
    assert _damage_rows(node.engine) == []
    assert any(
        r.levelname == "CRITICAL" and "damage marker was not written" in r.getMessage()
        for r in caplog.records
    ), caplog.text
    with pytest.raises(AuditUnavailable) as stopped:
        node.append(entry(12))
    assert stopped.value.code == "audit_log_damaged"
