"""The scheduler: fires due timers (reminders, auto-close, assignment retries)
in ``casegate serve``, every tick.

Timers live in the store and are claimed with a lease, the outbox's
pattern, so with several hosts on one PostgreSQL each timer fires once.
Each fires in its own transaction through ``Engine.run_due_timers``: the
same rules and executor as mail and the shell.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import socket
from collections.abc import Callable
from concurrent.futures import Executor

from casestore.store import StoreUnavailable
from smtpd_hook.engine import Engine

log = logging.getLogger("casegate.scheduler")


class Scheduler:
    def __init__(self, engine: Engine, db_executor: Executor | None, *, tick: float,
                 after: Callable[[], None] | None = None) -> None:
        self.engine = engine
        self.db_executor = db_executor
        self.tick = tick
        self.after = after  # e.g. poke the outbox when timers wrote mail
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.fired = 0

    async def run_once(self) -> int:
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        fired = await loop.run_in_executor(self.db_executor, ctx.run, self.engine.run_due_timers,
                                           self.owner)
        self.fired += fired
        if fired and self.after is not None:
            self.after()
        return fired

    async def run(self, stop: asyncio.Event) -> None:
        log.info("scheduler: tick every %gs", self.tick)
        while not stop.is_set():
            try:
                await self.run_once()
            except StoreUnavailable as exc:
                log.warning("scheduler: store unavailable: %s", exc)
            except Exception:
                log.exception("scheduler: unexpected error")
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.tick)
            except TimeoutError:
                pass
