"""The verifier: recompute every leaf, chain link and tree root from the entry bytes.

One streaming ``ChainVerifier`` serves both the database and an exported bundle.
It stops at the first damage and names it: which seq, and what kind (bytes changed,
missing, inserted or reordered, chain broken, tree root disagrees with a signed or
witnessed checkpoint or the signer's own record of what it signed, truncated behind
a checkpoint). A root mismatch alone cannot
say which entry changed, so that kind names the range between the last checkpoint
that matched and the first that did not.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable, Mapping, Sequence

from audit._runs import Run, check_run, leaf_hashes
from audit.checkpoint import Checkpoint, parse_checkpoint, verify_checkpoint, verify_cosignatures
from audit.entry import ZERO_CHAIN, chain_hash, parse_entry, verify_sealed
from audit.errors import AuditError
from audit.merkle import CompactRange, leaf_hash
from audit.note import NoteVerifier, parse_note
from audit.report import DAMAGE_KINDS, Damage, VerifyReport

# The report types live in ``audit.report``; named here too, where auditors' code
# has always found them.
__all__ = ["DAMAGE_KINDS", "ChainVerifier", "Damage", "VerifyReport"]


def _which(note: str) -> str:
    """A checkpoint named by its size, as far as its text can be read."""
    try:
        return f"the checkpoint of size {parse_checkpoint(parse_note(note).text).size}"
    except AuditError:
        return "a checkpoint that does not parse"


class ChainVerifier:
    """Feed entries in order; ``finish`` returns the report."""

    def __init__(
        self,
        *,
        start: int = 0,
        prev_chain: bytes = ZERO_CHAIN,
        frontier: CompactRange | None = None,
        checkpoints: Iterable[str] = (),
        signer_states: Iterable[str] = (),
        log_key: NoteVerifier | None = None,
        witness_keys: Sequence[NoteVerifier] = (),
        full: bool = True,
        track_nodes: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.start = self.next = start
        self.chain = prev_chain
        self.cr = frontier.copy() if frontier else CompactRange()
        if self.cr.size != start:
            raise AuditError("the starting compact range must have the starting size")
        self.full = full
        self.track_nodes = track_nodes
        self.new_nodes: list[tuple[int, int, bytes]] = []
        self.progress = progress
        self.damage: Damage | None = None
        self.warnings: list[str] = []
        self.cosigned: dict[str, int] = {}
        self.verified = 0
        self._good_cp = start
        self._prev = b""
        self._cps: dict[int, list[Checkpoint]] = {}
        self._states: dict[int, list[Checkpoint]] = {}
        self._load_checkpoints(checkpoints, log_key, witness_keys)
        self._load_states(signer_states, log_key)
        if self.start in self._cps or self.start in self._states:
            self._check_root(self.start)

    def _load_checkpoints(
        self, notes: Iterable[str], key: NoteVerifier | None, witnesses: Sequence[NoteVerifier]
    ) -> None:
        if key is None:
            self.warnings.append("no log key given: checkpoint signatures were not checked")
        for note in notes:
            try:
                if key is not None:
                    cp = verify_checkpoint(note, key)
                else:
                    cp = parse_checkpoint(parse_note(note).text)
                for cos in verify_cosignatures(note, list(witnesses)):
                    self.cosigned[cos.witness] = max(self.cosigned.get(cos.witness, 0), cp.size)
            except AuditError as exc:
                self.fail("checkpoint_invalid", None, f"{_which(note)} does not verify: {exc}")
                return
            if cp.size < self.start:
                self.warnings.append(f"checkpoint at size {cp.size} precedes the range; skipped")
                continue
            self._cps.setdefault(cp.size, []).append(cp)

    def _load_states(self, notes: Iterable[str], key: NoteVerifier | None) -> None:
        """The signer's own record of the last checkpoint it signed (``<key>.signed``),
        kept outside the store: a store whose tree does not extend it was rewritten
        or forked, even when every checkpoint row that said so was deleted."""
        for note in notes:
            try:
                cp = (
                    verify_checkpoint(note, key)
                    if key is not None
                    else parse_checkpoint(parse_note(note).text)
                )
            except AuditError as exc:
                self.warnings.append(
                    f"the signer's record ({_which(note)}) does not verify with the log key, "
                    f"not compared: {exc}"
                )
                continue
            if cp.size < self.start or cp in self._cps.get(cp.size, ()):
                continue
            self._states.setdefault(cp.size, []).append(cp)

    def fail(self, kind: str, seq: int | None, detail: str, end: int | None = None) -> None:
        if self.damage is None:
            self.damage = Damage(kind, seq, detail, end)

    def _check_root(self, size: int) -> None:
        root = self.cr.root()
        for cp in self._cps.get(size, ()):
            if not hmac.compare_digest(cp.root, root):
                self.fail(
                    "checkpoint_mismatch",
                    self._good_cp,
                    f"the tree of {size} entries does not match the checkpoint for that size: "
                    f"an entry in [{self._good_cp}, {size}) was changed, or the log rewritten",
                    end=size,
                )
                return
            self.verified += 1
        for cp in self._states.get(size, ()):
            if not hmac.compare_digest(cp.root, root):
                self.fail(
                    "signer_state_mismatch",
                    self._good_cp,
                    f"the tree of {size} entries is not the one the log key signed last "
                    "(the signer's own record): the log was rewritten or forked",
                    end=size,
                )
                return
            self.verified += 1
        self._good_cp = size

    def feed(
        self,
        data: bytes,
        *,
        stored_seq: int | None = None,
        stored_leaf: bytes | None = None,
        stored_chain: bytes | None = None,
    ) -> bool:
        """Check the next entry; returns False once damage was found."""
        if self.damage is not None:
            return False
        seq = self.next
        if stored_seq is not None and stored_seq != seq:
            self.fail("missing", seq, f"no entry with seq {seq}; the next stored is {stored_seq}")
            return False
        # The stored leaf hash is checked first: bytes changed in place are
        # "entry_changed" at this seq, even when the change also breaks the JSON or
        # alters the entry's own seq field (which would otherwise read as a reorder).
        lh = leaf_hash(data)
        if stored_leaf is not None and not hmac.compare_digest(stored_leaf, lh):
            self.fail("entry_changed", seq, "the entry bytes do not match their leaf hash")
            return False
        if self.full:
            try:
                verify_sealed(data, seq)
            except AuditError as exc:
                if exc.code == "audit_seq":
                    self._order_damage(data, seq)
                else:
                    self.fail("malformed", seq, str(exc))
                return False
        self.chain = chain_hash(self.chain, lh)
        if stored_chain is not None and not hmac.compare_digest(stored_chain, self.chain):
            self.fail("chain_broken", seq, "the stored chain hash does not follow")
            return False
        self._prev = data
        made = self.cr.append(lh)
        if self.track_nodes:
            self.new_nodes.extend(made)
        self.next += 1
        if self.next in self._cps or self.next in self._states:
            self._check_root(self.next)
        if self.progress is not None and self.next % 1000 == 0:
            self.progress(self.next - self.start)
        return self.damage is None

    @property
    def checkpoint_sizes(self) -> tuple[int, ...]:
        """The tree sizes some checkpoint gives a root for."""
        return tuple(sorted(self._cps))

    def feed_run(self, lines: Sequence[bytes], hashes: bytes) -> bool:
        """Check a run of entry lines against their ``hashes.txt`` bytes, in bulk.

        The fast path of ``verify_export``: True means every entry passed every check
        ``feed`` makes and the state moved past them. False means something in the
        run is off and *nothing* changed: the caller replays the run through ``feed``,
        which finds and names the exact damage.
        """
        if self.damage is not None or self.track_nodes:
            return False
        leaves = leaf_hashes([lines], self.next, self.full)
        if leaves is None:
            return False
        run = check_run(leaves, lines[-1], hashes, self.next, self.chain, self.checkpoint_sizes)
        return run is not None and self.accept_run(run)

    def accept_run(self, run: Run) -> bool:
        """Move past a run that ``check_run`` found whole (here or in a worker process).

        The run must start at the next seq *from the chain hash reached so far* (its
        anchor is the stored link it was checked from); every checkpoint inside it
        must match the root rebuilt from the tree so far and the run's subtrees.
        False, with nothing changed, otherwise.
        """
        if self.damage is not None or self.track_nodes or run.first != self.next:
            return False
        if any(run.first < s <= run.first + run.count for s in self._states):
            return False  # only ``feed`` compares the signer's record
        if not hmac.compare_digest(run.anchor, self.chain):
            return False
        good, verified = self._good_cp, self.verified
        for size in sorted(s for s in self._cps if run.first < s <= run.first + run.count):
            if size not in run.prefixes:
                return False
            cr = self.cr.copy()
            for level, h in run.prefixes[size]:
                cr.push(h, level)
            root = cr.root()
            if not all(hmac.compare_digest(cp.root, root) for cp in self._cps[size]):
                return False
            verified += len(self._cps[size])
            good = size
        for level, h in run.subtrees:
            self.cr.push(h, level)
        self.chain, self.next, self._prev = run.chain, run.first + run.count, run.last
        self._good_cp, self.verified = good, verified
        if self.progress is not None:
            self.progress(self.next - self.start)
        return True

    def _order_damage(self, data: bytes, seq: int) -> None:
        claimed = parse_entry(data).get("seq")
        if not isinstance(claimed, int) or isinstance(claimed, bool):
            self.fail("malformed", seq, "entry has no integer seq")
        elif claimed > seq:
            self.fail(
                "out_of_order",
                seq,
                f"entry {seq} is missing: entry {claimed} sits in its place (deleted or moved)",
            )
        elif claimed == seq - 1 and data != self._prev:
            # The entry before passed every check, yet this one claims its number:
            # a forged entry was slipped in at ``claimed`` and the rest shifted up.
            self.fail("inserted", claimed, f"an entry was inserted at {claimed}")
        else:
            self.fail("inserted", seq, f"entry {claimed} appears again at position {seq}")

    def verify_nodes(self, stored: Mapping[tuple[int, int], bytes]) -> None:
        """Compare the interior nodes recomputed since the last call with the stored ones."""
        for level, idx, h in self.new_nodes:
            got = stored.get((level, idx))
            if got is None or not hmac.compare_digest(got, h):
                first = idx << level
                self.fail(
                    "tree_node_changed",
                    first,
                    f"stored tree node (level {level}, index {idx}) is missing or wrong",
                    end=first + (1 << level),
                )
                break
        self.new_nodes.clear()

    def finish(
        self,
        *,
        head_size: int | None = None,
        head_chain: bytes | None = None,
        head_frontier: bytes | None = None,
    ) -> VerifyReport:
        if self.damage is None:
            beyond = sorted(s for s in self._cps if s > self.next)
            signed = sorted(s for s in self._states if s > self.next)
            if beyond:
                self.fail(
                    "truncated",
                    self.next,
                    f"the log ends at {self.next} but a checkpoint covers {beyond[-1]} entries",
                    end=beyond[-1],
                )
            elif signed:
                self.fail(
                    "signer_state_mismatch",
                    self.next,
                    f"the log ends at {self.next} but the log key signed a tree of "
                    f"{signed[-1]} entries (the signer's own record)",
                    end=signed[-1],
                )
            elif head_size is not None and head_size > self.next:
                self.fail(
                    "missing", self.next, f"the head says {head_size} entries, found {self.next}"
                )
            elif head_size is not None and head_size < self.next:
                self.fail("head_mismatch", head_size, "entries exist beyond the chain head")
            elif head_chain is not None and not hmac.compare_digest(head_chain, self.chain):
                self.fail("head_mismatch", self.next - 1, "the head's chain hash does not match")
            elif head_frontier is not None and not hmac.compare_digest(
                head_frontier, self.cr.to_bytes()
            ):
                self.fail(
                    "head_mismatch",
                    self.next - 1,
                    "the head's Merkle frontier does not match the entries "
                    "(the next checkpoint would sign its root)",
                )
        return VerifyReport(
            ok=self.damage is None,
            start=self.start,
            size=self.next,
            root=self.cr.root(),
            chain_hash=self.chain,
            checkpoints_verified=self.verified,
            cosigned=dict(self.cosigned),
            damage=self.damage,
            warnings=list(self.warnings),
            signed_to=self._good_cp if self.verified else None,
        )
