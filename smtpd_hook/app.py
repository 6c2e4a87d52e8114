"""``casegate serve``: the filter, the outbox worker (and the milter) in one process.

Runs until SIGTERM or SIGINT, then stops listening, finishes the messages
it accepted, makes a last pass over the outbox and returns.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import signal
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from casestore.store import Store
from rules.replies import Reply
from smtpd_hook.delivery import Delivery
from smtpd_hook.engine import Engine
from smtpd_hook.outbox import OutboxWorker
from smtpd_hook.scheduler import Scheduler
from smtpd_hook.server import FilterHandler, FilterServer
from smtpd_hook.settings import Settings

log = logging.getLogger("casegate.serve")

Extra = Callable[[asyncio.Event], Awaitable[None]]


async def serve(
    store: Store,
    settings: Settings,
    *,
    listen: tuple[str, int],
    extras: list[Extra] | None = None,
    ready: Callable[[tuple[str, int]], None] | None = None,
    stop: asyncio.Event | None = None,
    sign: Callable[[bytes], bytes] | None = None,
    dkim_verify: Callable[[bytes], list[tuple[str, bool, str]]] | None = None,
) -> None:
    stop = stop or asyncio.Event()
    # SQLite takes one writer at a time: one database thread avoids lock
    # contention; PostgreSQL gets a few.
    workers = 1 if store.is_sqlite else 4
    db_executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="casegate-db")
    engine = Engine(store, settings, sign=sign)
    outbox = OutboxWorker(store, settings, db_executor)
    loop = asyncio.get_running_loop()

    def process(delivery: Delivery) -> Reply:
        reply = engine.process(delivery)
        loop.call_soon_threadsafe(outbox.poke)
        return reply

    def enrich(delivery: Delivery) -> Delivery:
        if dkim_verify is None or not _signed(delivery.data):
            return delivery
        return dataclasses.replace(delivery, dkim=tuple(dkim_verify(delivery.data)))

    handler = FilterHandler(process, db_executor, enrich=enrich)
    server = FilterServer(handler, hostname=settings.helo_name)
    bound = await server.start(*listen)
    log.info("listening on %s:%d, re-injecting to %s:%d", bound[0], bound[1],
             settings.reinject_host, settings.reinject_port)

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass

    scheduler = Scheduler(engine, db_executor, tick=settings.tick_seconds,
                          after=lambda: loop.call_soon_threadsafe(outbox.poke))
    tasks = [asyncio.create_task(outbox.run(stop), name="outbox"),
             asyncio.create_task(scheduler.run(stop), name="scheduler")]
    tasks += [asyncio.create_task(extra(stop)) for extra in extras or []]
    if ready is not None:
        ready(bound)
    try:
        await stop.wait()
    finally:
        log.info("stopping: finishing accepted messages")
        await server.drain()
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await asyncio.wait_for(outbox.run_once(), timeout=10)
        except Exception as exc:  # the outbox keeps it for next start
            log.warning("last outbox pass: %s", exc)
        db_executor.shutdown(wait=True)
        log.info("stopped")


_DKIM_HEADER = re.compile(rb"^dkim-signature:", re.IGNORECASE | re.MULTILINE)


def _signed(data: bytes) -> bool:
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    return _DKIM_HEADER.search(head) is not None
