"""Postfix's queue ID on every log line, through a context variable.

The SMTP hook sets :data:`queue_id` from XFORWARD IDENT and the milter from
the ``i`` macro; :class:`QueueIdFilter` puts it on each record as
``record.queue_id`` so a format string can print ``%(queue_id)s``. Context
variables follow ``asyncio`` tasks and ``asyncio.to_thread``, so the ID stays
with the message wherever its work runs.
"""

from __future__ import annotations

import contextvars
import logging

queue_id: contextvars.ContextVar[str] = contextvars.ContextVar("queue_id", default="-")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(queue_id)s] %(message)s"


class QueueIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "queue_id"):
            record.queue_id = queue_id.get()
        return True
