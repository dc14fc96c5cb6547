"""Crash safety: SIGKILL a writer at random points; no acknowledged change may be lost or corrupted.

The writer prints a line only after the store call returned (= acknowledged):
    A <uid> <sha256>         append to INBOX acknowledged
    C <uid> <sha256>         copy into Archive acknowledged (Archive uid)
    D <uid>                  about to flag \\Deleted and expunge this INBOX uid (intent, not yet done)
    X <uid>                  expunge acknowledged
    R <uid> <sha256>         about to REPLACE this INBOX uid by a message of that digest (intent)
    P <uid> <new uid>        that replacement acknowledged
After each kill the test reopens the store and checks: every acknowledged append/copy not expunged (nor
about to be) is present and byte-identical, every acknowledged expunge is gone, verify() reports no
error (orphan files from an interrupted write are allowed: they are reported as "orphan:").
A replacement cut short is all or nothing: either the old message is there and the new one is
not, or the new one is there (once) and the old one is gone.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from midb.store import Store

REPO = str(Path(__file__).resolve().parent.parent)
ROUNDS = 15

WRITER = textwrap.dedent("""
    import hashlib, random, sys
    sys.path.insert(0, sys.argv[3])
    from midb.store import Store

    store = Store(sys.argv[1], fsync=True)
    rng = random.Random(int(sys.argv[2]))
    inbox = store.get_folder("crash", "INBOX").id
    archive = store.get_folder("crash", "Archive").id
    live = store.uids("crash", inbox)
    print("READY", flush=True)
    while True:
        # Every third round replaces only: a kill then most likely lands inside a replacement.
        roll = 0.76 if int(sys.argv[2]) % 3 == 2 else rng.random()
        if roll < 0.55 or len(live) < 3:
            size = rng.choice([40, 300, 2000, 9000, 150000])
            data = rng.randbytes(size)
            items = [(data, ["\\\\Seen"] if rng.random() < 0.5 else [], None, 0)]
            if rng.random() < 0.15:
                items.append((rng.randbytes(500), ["kw"], None, 60))
            _, uids = store.append_many("crash", inbox, items)
            for uid, item in zip(uids, items):
                live.append(uid)
                print("A", uid, hashlib.sha256(item[0]).hexdigest(), flush=True)
        elif roll < 0.75:
            chosen = rng.sample(live, min(len(live), rng.randint(1, 5)))
            store.store_flags("crash", inbox, chosen, rng.choice(["add", "remove"]), ["\\\\Flagged", "$x"])
        elif roll < 0.78:
            old = rng.choice(live)
            data = rng.randbytes(rng.choice([60, 3000, 70000]))
            print("R", old, hashlib.sha256(data).hexdigest(), flush=True)
            _, new, _, _ = store.replace("crash", inbox, data, replacing=(inbox, old))
            live.remove(old)
            live.append(new)
            print("P", old, new, flush=True)
        elif roll < 0.85:
            uid = rng.choice(live)
            _, pairs = store.copy("crash", inbox, [uid], archive)
            data = store.read_body(store.get_messages("crash", archive, [pairs[0][1]])[0].blob)
            print("C", pairs[0][1], hashlib.sha256(data).hexdigest(), flush=True)
        else:
            victims = rng.sample(live, min(len(live), rng.randint(1, 3)))
            for uid in victims:
                print("D", uid, flush=True)
            store.store_flags("crash", inbox, victims, "add", ["\\\\Deleted"])
            expunged = store.expunge("crash", inbox, victims)
            for uid in expunged:
                live.remove(uid)
                print("X", uid, flush=True)
""")


@pytest.mark.slow
def test_sigkill_never_loses_acknowledged_changes(tmp_path: Path) -> None:
    path = str(tmp_path / "store")
    with Store(path, fsync=True) as store:
        store.create_account("crash")
    script = tmp_path / "writer.py"
    script.write_text(WRITER, encoding="utf-8")
    rng = random.Random(20240611)
    acknowledged: dict[int, str] = {}      # INBOX uid -> sha256
    copies: dict[int, str] = {}            # Archive uid -> sha256
    doomed: set[int] = set()               # expunge intended (may or may not have happened)
    expunged: set[int] = set()
    started = time.monotonic()
    total_lines = 0
    orphans_seen = 0
    replacements = 0
    replacements_cut = 0
    for round_number in range(ROUNDS):
        # bufsize=0: readline() must not pull lines past READY into a buffer communicate() ignores.
        process = subprocess.Popen([sys.executable, str(script), path, str(round_number), REPO],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        try:
            assert process.stdout is not None
            first = process.stdout.readline()
            assert first == b"READY\n", process.stderr.read() if process.stderr else first
            time.sleep(rng.uniform(0.02, 0.6))
        finally:
            os.kill(process.pid, signal.SIGKILL)
            output, errors = process.communicate(timeout=30)
        assert process.returncode == -signal.SIGKILL, errors.decode(errors="replace")
        complete = output.decode().split("\n")[:-1]   # a torn last line was never acknowledged
        total_lines += len(complete)
        pending_replacement: tuple[int, str] | None = None   # the round's last replacement if cut short
        for line in complete:
            kind, uid_text, *rest = line.split()
            uid = int(uid_text)
            if kind == "A":
                acknowledged[uid] = rest[0]
            elif kind == "C":
                copies[uid] = rest[0]
            elif kind == "D":
                doomed.add(uid)
            elif kind == "X":
                expunged.add(uid)
            elif kind == "R":
                doomed.add(uid)
                pending_replacement = (uid, rest[0])
            elif kind == "P":
                assert pending_replacement is not None and pending_replacement[0] == uid
                expunged.add(uid)
                acknowledged[int(rest[0])] = pending_replacement[1]
                replacements += 1
                pending_replacement = None

        with Store(path, fsync=True) as store:
            inbox = store.get_folder("crash", "INBOX")
            archive = store.get_folder("crash", "Archive")
            assert inbox is not None and archive is not None
            present = {meta.uid: meta for meta in store.messages("crash", inbox.id)}
            for uid, digest in acknowledged.items():
                if uid in doomed:
                    continue
                assert uid in present, f"round {round_number}: acknowledged uid {uid} lost"
                body = store.read_body(present[uid].blob)
                assert hashlib.sha256(body).hexdigest() == digest, f"uid {uid} corrupted"
                assert len(body) == present[uid].size
            for uid in expunged:
                assert uid not in present, f"round {round_number}: expunged uid {uid} came back"
            if pending_replacement is not None:
                old, digest = pending_replacement
                replacements_cut += 1
                new_copies = [uid for uid, meta in present.items()
                              if hashlib.sha256(store.read_body(meta.blob)).hexdigest() == digest]
                if old in present:
                    assert new_copies == [], f"round {round_number}: uid {old} replaced but kept"
                else:
                    assert len(new_copies) == 1, f"round {round_number}: uid {old} gone, {new_copies} stored"
            archived = {meta.uid: meta for meta in store.messages("crash", archive.id)}
            for uid, digest in copies.items():
                assert hashlib.sha256(store.read_body(archived[uid].blob)).hexdigest() == digest
            problems = store.verify()
            errors_found = [problem for problem in problems if not problem.startswith("orphan:")]
            assert errors_found == [], f"round {round_number}: {errors_found}"
            orphans_seen += len(problems)
            if problems:
                # Orphans are repairable, never fatal (too young to be removed now: reported only).
                store.verify(repair=True)
    elapsed = time.monotonic() - started
    print(f"{ROUNDS} kills, {total_lines} acknowledged operations, {len(acknowledged)} appends, "
          f"{replacements} replacements ({replacements_cut} cut short), "
          f"{orphans_seen} orphan reports, {elapsed:.1f} s")
    assert len(acknowledged) > ROUNDS      # the writer really ran between the kills
    assert replacements > 0 and replacements_cut > 0   # the replace-only rounds are killed inside one
