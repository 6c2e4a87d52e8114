"""``casegate serve --workers N``: N worker processes behind one listener.

The parent binds the listening socket, forks N children that each run the
whole of ``serve`` (filter, outbox worker, scheduler) on the inherited
socket, and supervises them:

* one main PID for systemd; SIGTERM/SIGINT are forwarded to every child,
  which drains as a single ``serve`` does, and the parent exits when they
  are gone (0), killing what is left after ``stop_timeout``;
* SIGHUP is forwarded to every child (each re-reads the config, templates
  and blacklist); ``on_reload`` lets the parent refresh what it hands to
  children it starts later;
* a child that dies is restarted with a log line; when children keep dying
  (``max_crashes`` within ``crash_window`` seconds) the parent stops the
  others and exits 1, so systemd's Restart= and its logs take over.

Every child competes for connections on the one socket: a free child takes
a new connection while another is busy or restarting, and the socket, held
by the parent, never closes while children come and go, so Postfix sees no
refused connection. The parent stays single-threaded (no store connection,
no logging thread), which keeps ``fork`` safe.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("casegate.workers")

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_WATCHED = (*FORWARDED, signal.SIGCHLD)


def cpu_count() -> int:
    """The CPUs this process may run on (``workers = "auto"``)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def parse_workers(value: object) -> int:
    """``N`` (1-64) or ``auto``; ValueError otherwise."""
    text = str(value).strip().lower()
    if text == "auto":
        return cpu_count()
    if not text.isdigit() or not 1 <= int(text) <= 64:
        raise ValueError(f"workers must be a number from 1 to 64 or auto, not {value!r}")
    return int(text)


def _die_with_parent() -> None:
    """Linux: SIGTERM this child when the parent dies (kill -9 of the parent
    must not leave workers serving without supervision)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


@dataclass
class _Slot:
    index: int
    pid: int | None = None
    started: float = 0.0
    restart_at: float = 0.0
    crashes: list[float] = field(default_factory=list)


class Supervisor:
    """Forks ``count`` children running ``child(index, pending)`` and keeps
    them running until SIGTERM/SIGINT. ``child`` must not return normally
    into the parent's code: its return value is the child's exit status.
    ``pending`` is a set of signals the child received before it could
    install its own handlers; the child re-raises them once it can."""

    def __init__(self, count: int, child: Callable[[int, set[int]], int], *,
                 on_reload: Callable[[], None] | None = None, max_crashes: int = 5,
                 crash_window: float = 60.0, stop_timeout: float = 85.0) -> None:
        self.count = count
        self.child = child
        self.on_reload = on_reload
        self.max_crashes = max_crashes
        self.crash_window = crash_window
        self.stop_timeout = stop_timeout
        self.slots = [_Slot(i) for i in range(count)]
        self._signals: list[int] = []
        self.stopping = False
        self.failed = False

    # -- signals ---------------------------------------------------------------

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signals.append(signum)

    def _install(self) -> tuple[int, int]:
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        for sig in _WATCHED:
            signal.signal(sig, self._on_signal)
        signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        return r, w

    # -- children --------------------------------------------------------------

    def _spawn(self, slot: _Slot, pipe: tuple[int, int]) -> None:
        # Signals blocked over fork: the child replaces the parent's handlers
        # before any can reach it, and keeps the ones that arrived meanwhile.
        signal.pthread_sigmask(signal.SIG_BLOCK, _WATCHED)
        try:
            pid = os.fork()
            if pid == 0:  # the child: never returns
                code = 1
                try:
                    signal.set_wakeup_fd(-1)
                    for fd in pipe:
                        os.close(fd)
                    pending: set[int] = set()
                    for sig in FORWARDED:
                        signal.signal(sig, lambda signum, frame: pending.add(signum))
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    _die_with_parent()
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, _WATCHED)
                    code = self.child(slot.index, pending)
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else 1
                except BaseException:
                    with contextlib.suppress(Exception):
                        log.exception("worker %d failed", slot.index + 1)
                finally:
                    with contextlib.suppress(Exception):
                        logging.shutdown()
                    os._exit(code)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _WATCHED)
        slot.pid, slot.started = pid, time.monotonic()
        log.info("worker %d started (pid %d)", slot.index + 1, pid)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = next((s for s in self.slots if s.pid == pid), None)
            if slot is None:
                continue
            slot.pid = None
            how = _describe(status)
            if self.stopping:
                log.info("worker %d (pid %d) %s", slot.index + 1, pid, how)
                continue
            now = time.monotonic()
            slot.crashes = [t for t in slot.crashes if now - t < self.crash_window] + [now]
            recent = sum(1 for s in self.slots for t in s.crashes if now - t < self.crash_window)
            if recent > self.max_crashes:
                log.error("worker %d (pid %d) %s: %d worker exits within %.0fs, giving up",
                          slot.index + 1, pid, how, recent, self.crash_window)
                self.failed = True
                self._stop()
                continue
            delay = 0.0 if len(slot.crashes) == 1 else min(5.0, 0.5 * 2 ** (len(slot.crashes) - 2))
            slot.restart_at = now + delay
            log.error("worker %d (pid %d) %s; restarting it%s", slot.index + 1, pid, how,
                      f" in {delay:g}s" if delay else "")

    def _forward(self, sig: int) -> None:
        for slot in self.slots:
            if slot.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, sig)

    def _stop(self) -> None:
        if not self.stopping:
            self.stopping = True
            self._stop_deadline = time.monotonic() + self.stop_timeout
        self._forward(signal.SIGTERM)

    def _handle_signals(self) -> None:
        while self._signals:
            sig = self._signals.pop(0)
            if sig in (signal.SIGTERM, signal.SIGINT):
                if not self.stopping:
                    log.info("%s: stopping %d worker(s)", signal.Signals(sig).name,
                             sum(s.pid is not None for s in self.slots))
                self._stop()
            elif sig == signal.SIGHUP and not self.stopping:
                if self.on_reload is not None:
                    try:
                        self.on_reload()
                    except Exception as exc:  # the children report their own view
                        log.error("SIGHUP: %s", exc)
                live = [s for s in self.slots if s.pid is not None]
                log.info("SIGHUP: forwarded to %d worker(s)", len(live))
                self._forward(signal.SIGHUP)

    def run(self) -> int:
        """Supervise until stopped: 0, or 1 when the workers kept dying."""
        pipe = self._install()
        try:
            for slot in self.slots:
                self._spawn(slot, pipe)
            while True:
                self._reap()
                self._handle_signals()
                now = time.monotonic()
                if self.stopping:
                    alive = [s for s in self.slots if s.pid is not None]
                    if not alive:
                        break
                    if now > self._stop_deadline:
                        log.error("%d worker(s) still running after %.0fs: killing them",
                                  len(alive), self.stop_timeout)
                        self._forward(signal.SIGKILL)
                        self._stop_deadline = now + 3600
                else:
                    for slot in self.slots:
                        if slot.pid is None and slot.restart_at <= now:
                            self._spawn(slot, pipe)
                with contextlib.suppress(InterruptedError):
                    select.select([pipe[0]], [], [], 0.5)
                with contextlib.suppress(BlockingIOError):
                    while os.read(pipe[0], 512):
                        pass
        finally:
            signal.set_wakeup_fd(-1)
            for fd in pipe:
                os.close(fd)
            for sig in _WATCHED:
                signal.signal(sig, signal.SIG_DFL)
        return 1 if self.failed else 0


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"
