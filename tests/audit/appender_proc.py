"""A separate appending process for the concurrency and kill -9 tests.

``python -m tests.audit.appender_proc URL NODE BATCHES BATCH_SIZE THREADS``
appends ``BATCHES`` batches of ``BATCH_SIZE`` entries from ``THREADS`` threads, all
through one ``AuditLog`` (so group commit is exercised), and prints
``ok <batch> <first seq> <last seq>`` once each batch is durable. ``BATCHES`` of 0
means run until killed.
"""

from __future__ import annotations

import itertools
import sys
import threading

from audit import AuditLog, engine_for


def main() -> None:
    url, node = sys.argv[1], sys.argv[2]
    batches, size, threads = (int(x) for x in sys.argv[3:6])
    log = AuditLog(engine_for(url), node=node, checkpoint_every=0, checkpoint_interval_s=0)
    counter = itertools.count()
    out = threading.Lock()

    def work() -> None:
        while True:
            b = next(counter)
            if batches and b >= batches:
                return
            got = log.append_many(
                [
                    {
                        "event": "exchange",
                        "exchange_id": f"{node}-{b}",
                        "actor": node,
                        "detail": {"batch": f"{node}-{b}", "i": i},
                    }
                    for i in range(size)
                ]
            )
            with out:
                print(f"ok {node}-{b} {got[0].seq} {got[-1].seq}", flush=True)

    ts = [threading.Thread(target=work) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    log.close()


if __name__ == "__main__":
    main()
