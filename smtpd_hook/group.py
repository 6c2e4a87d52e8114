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
    to ``limit`` calls in one transaction.

    :attr:`urgent` is the door for the outbox's record of a message sent:
    the sender waits for that commit before it sends the next message, so a
    record must not wait behind a whole batch of deliveries. Waiting records
    make the next batch on their own; one arriving while a batch runs joins
    it after the delivery in hand, and the batch then commits at once (the
    deliveries it had not reached wait for the next one)."""

    def __init__(self, store: Store, executor: Executor, *, limit: int = 16) -> None:
        self.store = store
        self.executor = executor
        self.limit = limit
        self._waiting: deque[tuple[Future[Any], Job]] = deque()
        self._urgent: deque[tuple[Future[Any], Job]] = deque()
        self._lock = threading.Lock()
        self.batches = 0  # committed batches of more than one (for tests and logs)
        self.urgent = _Urgent(self)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return self._queue(self._waiting, fn, args, kwargs)

    def _queue(self, queue: deque[tuple[Future[Any], Job]], fn: Callable[..., Any],
               args: tuple[Any, ...], kwargs: dict[str, Any]) -> Future[Any]:
        future: Future[Any] = Future()
        job: Job = (lambda: fn(*args, **kwargs)) if args or kwargs else fn
        with self._lock:
            queue.append((future, job))
        self.executor.submit(self._drain)
        return future

    def _take(self, limit: int) -> list[tuple[Future[Any], Job]]:
        """Up to ``limit`` queued calls, each marked running (a cancelled one is
        dropped): the urgent ones alone when there are any."""
        with self._lock:
            queue = self._urgent or self._waiting
            taken = [queue.popleft() for _ in range(min(limit, len(queue)))]
        return _running(taken)

    def _take_urgent(self) -> list[tuple[Future[Any], Job]]:
        with self._lock:
            taken = [self._urgent.popleft() for _ in range(len(self._urgent))]
        return _running(taken)

    def _requeue(self, jobs: list[tuple[Future[Any], Job]]) -> None:
        """Jobs a batch ended before: first in line for the next drain."""
        with self._lock:
            self._waiting.extendleft(reversed(jobs))
        self.executor.submit(self._drain)

    def _drain(self) -> None:
        batch = self._take(self.limit)
        if not batch:
            return  # an earlier drain took them
        if len(batch) > 1:
            results = self._together(batch)
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

    def _together(self, batch: list[tuple[Future[Any], Job]]) -> list[Any] | None:
        """The batch's jobs in one transaction; None when it was rolled back.
        Urgent calls arriving meanwhile end it early: they join ``batch``
        (changed in place) and the jobs not reached yet go back to the front
        of the queue."""
        store = self.store
        store.clear_trouble()
        results: list[Any] = []
        try:
            with store.atomic():
                for n, (_, job) in enumerate(batch):
                    results.append(job())
                    if store.trouble_seen():
                        raise _Abandon
                    if self._urgent and n + 1 < len(batch):
                        self._requeue(batch[n + 1:])
                        del batch[n + 1:]
                        joined = self._take_urgent()
                        batch += joined
                        for _, urgent in joined:
                            results.append(urgent())
                            if store.trouble_seen():
                                raise _Abandon
                        break
        except Exception as exc:
            log.warning("%d deliveries stored one by one instead of together: %s",
                        len(batch), "the store was in trouble" if isinstance(exc, _Abandon) else exc)
            return None
        return results


def _running(taken: list[tuple[Future[Any], Job]]) -> list[tuple[Future[Any], Job]]:
    """Those to run: marked running now (a cancelled one dropped), or
    already running (put back by a batch that ended early)."""
    return [(future, job) for future, job in taken
            if future.running() or future.set_running_or_notify_cancel()]


class _Urgent(Executor):
    """:attr:`GroupCommit.urgent`: ``submit`` queues ahead of the deliveries."""

    def __init__(self, group: GroupCommit) -> None:
        self.group = group

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return self.group._queue(self.group._urgent, fn, args, kwargs)
