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
import socket
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from casestore.store import Store
from smtpd_hook.delivery import Delivery
from smtpd_hook.engine import Engine
from smtpd_hook.group import GroupCommit
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
    reload_settings: Callable[[], Settings] | None = None,
    reloaders: list[Callable[[], Awaitable[None]]] | None = None,
    sock: socket.socket | None = None,
) -> None:
    """Run until ``stop`` (or SIGTERM/SIGINT). On SIGHUP: ``reload_settings()``
    (the config file read again), the engine's :meth:`~Engine.reload`
    (templates, blacklist, directory) and each of ``reloaders`` (the
    milter's lists); open SMTP sessions go on. With ``sock`` (``serve
    --workers``) it accepts on that inherited listening socket instead of
    binding ``listen``."""
    stop = stop or asyncio.Event()
    # SQLite takes one writer at a time: one database thread avoids lock
    # contention; PostgreSQL gets a few.
    workers = 1 if store.is_sqlite else 4
    db_executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="casegate-db")
    engine = Engine(store, settings, sign=sign)
    # SQLite: deliveries waiting for the store's thread share one commit;
    # the outbox's record of a message sent goes ahead of them, since the
    # sender waits for it before the next message (smtpd_hook/group.py).
    processor_executor = GroupCommit(store, db_executor) if store.is_sqlite else db_executor
    if isinstance(processor_executor, GroupCommit):
        outbox = OutboxWorker(store, settings, db_executor, record_executor=processor_executor.urgent)
    else:
        outbox = OutboxWorker(store, settings, db_executor, record_in_sender=True)
    outbox.attach()  # rows this process enqueues are sent without being claimed
    loop = asyncio.get_running_loop()

    def enrich(delivery: Delivery) -> Delivery:
        assert dkim_verify is not None
        return dataclasses.replace(delivery, dkim=tuple(dkim_verify(delivery.data)))

    # Only a signed message, and only with DKIM on, takes the detour through
    # the default pool: for the others it was a thread hop for nothing.
    # The outbox is poked on the loop when a delivery is done (what it
    # stored may be due), not by a second wake-up from the store's thread.
    handler = FilterHandler(engine.process, processor_executor,
                            enrich=enrich if dkim_verify is not None else None,
                            enrich_when=lambda delivery: _signed(delivery.data), after=outbox.poke)
    server = FilterServer(handler, hostname=settings.helo_name)
    bound = await server.start(*listen, sock=sock)
    log.info("listening on %s:%d, re-injecting to %s:%d", bound[0], bound[1],
             settings.reinject_host, settings.reinject_port)

    scheduler = Scheduler(engine, db_executor, tick=settings.tick_seconds,
                          after=lambda: loop.call_soon_threadsafe(outbox.poke))
    current = [settings]
    reloading: set[asyncio.Task[None]] = set()

    async def reload() -> None:
        log.info("SIGHUP: re-reading the config, templates and blacklist")
        new = None
        if reload_settings is not None:
            try:
                new = await loop.run_in_executor(None, reload_settings)
            except Exception as exc:  # a typo in the file must not stop the service
                log.error("SIGHUP: cannot use the config (%s): keeping the running settings", exc)
        changed = [f.name for f in dataclasses.fields(Settings)
                   if new is not None and getattr(new, f.name) != getattr(current[0], f.name)]
        engine.reload(new)
        if new is not None:
            outbox.settings = new
            store.handoff_lease_seconds = new.outbox_lease_seconds
            scheduler.tick = new.tick_seconds
            current[0] = new
        for reloader in reloaders or []:
            try:
                await reloader()
            except Exception as exc:
                log.error("SIGHUP: reload failed: %s", exc)
        log.info("SIGHUP: reloaded; settings changed: %s", ", ".join(changed) or "none")

    def on_hup() -> None:
        task = asyncio.ensure_future(reload())
        reloading.add(task)
        task.add_done_callback(reloading.discard)

    for sig, action in ((signal.SIGTERM, stop.set), (signal.SIGINT, stop.set), (signal.SIGHUP, on_hup)):
        try:
            loop.add_signal_handler(sig, action)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass

    tasks = [asyncio.create_task(outbox.run(stop), name="outbox"),
             asyncio.create_task(scheduler.run(stop), name="scheduler")]
    # A service serve runs beside the filter (the milter) that fails, e.g.
    # cannot bind its port, stops serve with an error: running on without
    # it would hold supervised mail at the milter's default action while
    # the logs said nothing more. systemd (Restart=on-failure) starts again.
    failed: list[BaseException] = []

    def watch(task: asyncio.Task[None]) -> None:
        if task.cancelled() or stop.is_set():
            return
        exc = task.exception()
        if exc is not None:
            log.error("%s failed: %s; stopping", task.get_name(), exc)
            failed.append(exc)
            stop.set()

    for n, extra in enumerate(extras or []):
        task = asyncio.create_task(extra(stop), name=getattr(extra, "service", f"service {n + 1}"))
        task.add_done_callback(watch)
        tasks.append(task)
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
        outbox.detach()
        log.info("stopped")
    if failed:
        raise ServiceFailed(str(failed[0])) from failed[0]


class ServiceFailed(Exception):
    """A service serve ran beside the filter (the milter) failed."""


_DKIM_HEADER = re.compile(rb"^dkim-signature:", re.IGNORECASE | re.MULTILINE)


def _signed(data: bytes) -> bool:
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    return _DKIM_HEADER.search(head) is not None
