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
import logging.handlers
import queue
import time

queue_id: contextvars.ContextVar[str] = contextvars.ContextVar("queue_id", default="-")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(queue_id)s] %(message)s"


class QueueIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "queue_id"):
            record.queue_id = queue_id.get()
        return True


class BatchStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler whose per-record ``flush`` does nothing: the
    :class:`BatchingListener` that drives it calls :meth:`flush_batch` once
    the records waiting are written, so a burst of lines is one ``write``."""

    def flush(self) -> None:
        pass

    def flush_batch(self) -> None:
        super().flush()

    def close(self) -> None:
        self.flush_batch()
        super().close()


class BatchingListener(logging.handlers.QueueListener):
    """A QueueListener that does not wake for each record: when the queue
    runs dry it flushes its handlers and sleeps ``pause`` seconds, while the
    mail path's threads put records without waking anyone; then it takes
    what came meanwhile at once (or waits, when nothing did). A line reaches
    the log at most ``pause`` later; ``stop`` still writes everything."""

    def __init__(self, q: queue.SimpleQueue[logging.LogRecord], *handlers: logging.Handler,
                 pause: float = 0.05) -> None:
        super().__init__(q, *handlers)
        self.pause = pause

    def dequeue(self, block: bool) -> logging.LogRecord:
        try:
            return self.queue.get_nowait()  # type: ignore[no-any-return]
        except queue.Empty:
            if not block:
                raise
        self._flush()
        time.sleep(self.pause)
        return self.queue.get()  # type: ignore[no-any-return]

    def stop(self) -> None:
        super().stop()
        self._flush()

    def _flush(self) -> None:
        for handler in self.handlers:
            if isinstance(handler, BatchStreamHandler):
                handler.flush_batch()
