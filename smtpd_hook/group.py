"""Group commit for SQLite (issue 12).

SQLite takes one writer at a time, so ``serve`` stores deliveries on one
thread, and each paid its own commit: the WAL frames of every page it
touched (the message table, its indexes, the search index) and an fsync.
When several deliveries are waiting for that thread (a burst: Postfix holds
up to 20 sessions to the filter), :class:`GroupCommit` stores them in one
transaction, each in its own savepoint, and answers each only after that one
commit; pages the deliveries share are written once.

Nothing changes for a delivery's outcome. A delivery that fails on its own
(a bug it triggers, a misrouted address) rolls back its savepoint and gets
its 451 or quarantine as before; the others are kept. When the store itself
is in trouble during the batch (locked, disk full, gone), or the shared
commit fails, the whole batch is rolled back and every delivery is stored
again in a transaction of its own, as without grouping: nothing was
committed, so nothing is doubled (the duplicate check would catch it anyway).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

from casestore.store import Store

log = logging.getLogger("casegate.filter")

Job = Callable[[], Any]


class _Abandon(Exception):
    """The store was in trouble during the batch: store each on its own."""


class GroupCommit(Executor):
    """An executor for the processor's calls: each ``submit`` queues the call
    and asks ``executor`` (the store's one thread) to run what is queued, up
    to ``limit`` calls in one transaction."""

    def __init__(self, store: Store, executor: Executor, *, limit: int = 16) -> None:
        self.store = store
        self.executor = executor
        self.limit = limit
        self._waiting: deque[tuple[Future[Any], Job]] = deque()
        self._lock = threading.Lock()
        self.batches = 0  # committed batches of more than one (for tests and logs)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        job: Job = (lambda: fn(*args, **kwargs)) if args or kwargs else fn
        with self._lock:
            self._waiting.append((future, job))
        self.executor.submit(self._drain)
        return future

    def _drain(self) -> None:
        with self._lock:
            taken = [self._waiting.popleft() for _ in range(min(self.limit, len(self._waiting)))]
        batch = [(future, job) for future, job in taken if future.set_running_or_notify_cancel()]
        if not batch:
            return  # an earlier drain took them
        if len(batch) > 1:
            results = self._together([job for _, job in batch])
            if results is not None:
                self.batches += 1
                for (future, _), result in zip(batch, results, strict=True):
                    future.set_result(result)
                return
        for future, job in batch:
            try:
                future.set_result(job())
            except BaseException as exc:
                future.set_exception(exc)

    def _together(self, jobs: list[Job]) -> list[Any] | None:
        """Every job in one transaction; None when it was rolled back."""
        store = self.store
        store.clear_trouble()
        results: list[Any] = []
        try:
            with store.atomic():
                for job in jobs:
                    results.append(job())
                    if store.trouble_seen():
                        raise _Abandon
        except Exception as exc:
            log.warning("%d deliveries stored one by one instead of together: %s",
                        len(jobs), "the store was in trouble" if isinstance(exc, _Abandon) else exc)
            return None
        return results
