"""The logging thread of serve and milter: batched, ordered, nothing lost."""

from __future__ import annotations

import io
import logging
import logging.handlers
import queue
import time

from rules.logctx import BatchingListener, BatchStreamHandler, QueueIdFilter, queue_id


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def _logger(name: str, q: queue.SimpleQueue[logging.LogRecord]) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.propagate = False
    handler = logging.handlers.QueueHandler(q)
    handler.addFilter(QueueIdFilter())
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    return logger


def _wait_for(check, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def test_a_burst_is_written_in_order_in_a_few_writes() -> None:
    q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    stream = CountingStream()
    handler = BatchStreamHandler(stream)
    handler.setFormatter(logging.Formatter("[%(queue_id)s] %(message)s"))
    listener = BatchingListener(q, handler, pause=0.2)
    listener.start()
    log = _logger("test.logctx.burst", q)
    try:
        token = queue_id.set("4XyzQ1")
        try:
            for i in range(500):
                log.info("line %d of %s", i, "the burst")
        finally:
            queue_id.reset(token)
        _wait_for(lambda: stream.getvalue().count("\n") == 500)
    finally:
        listener.stop()
    lines = stream.getvalue().splitlines()
    assert lines == [f"[4XyzQ1] line {i} of the burst" for i in range(500)]
    # one flush per batch (the handler's per-record flush does nothing), not per line
    assert 1 <= stream.flushes <= 10


def test_a_lone_line_arrives_and_stop_writes_the_rest() -> None:
    q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    stream = CountingStream()
    handler = BatchStreamHandler(stream)
    listener = BatchingListener(q, handler, pause=0.05)
    listener.start()
    log = _logger("test.logctx.lone", q)
    log.warning("first")
    _wait_for(lambda: stream.getvalue() == "first\n")
    time.sleep(0.2)  # the listener idles in a blocking get, and wakes for the next
    log.warning("second")
    _wait_for(lambda: stream.getvalue() == "first\nsecond\n")
    for i in range(50):
        log.warning("last %d", i)
    listener.stop()  # everything put before stop is written when it returns
    assert stream.getvalue().splitlines() == ["first", "second", *(f"last {i}" for i in range(50))]
