"""Running the real ``casegate`` command: CLI calls and a ``serve`` process."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def casegate_cmd() -> list[str]:
    script = Path(sys.executable).with_name("casegate")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import cli; cli.main()"]


_template: Path | None = None


def _start_from_template(store_url: str) -> None:
    """Before ``init`` on a SQLite store that does not exist yet: a copy of one
    migrated once per test process (0600, as init makes it), so init only
    writes the config. The migrations themselves are the component tests'."""
    global _template
    if not store_url.startswith("sqlite:///"):
        return
    target = Path(store_url.removeprefix("sqlite:///"))
    if target.exists() or not target.parent.is_dir():
        return
    if _template is None:
        import tempfile

        from casestore.store import Store

        folder = tempfile.mkdtemp(prefix="casegate-template-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        path = Path(folder) / "casegate.db"
        store = Store(f"sqlite:///{path}")
        try:
            store.migrate()
        finally:
            store.close()
        _template = path
    shutil.copyfile(_template, target)
    target.chmod(0o600)


def _in_process(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    from click.testing import CliRunner

    import cli

    changed = {k: v for k, v in env.items() if os.environ.get(k) != v}
    unset = [k for k in os.environ if k not in env]
    result = CliRunner().invoke(cli.main, argv, env={**changed, **dict.fromkeys(unset)},
                                catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(["casegate", *argv], result.exit_code, result.stdout, result.stderr)


class Casegate:
    """One installation: a config file, a store, and (when started) ``serve``."""

    def __init__(self, root: Path, *, store_url: str | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.config = self.root / "casegate.toml"
        self.store_url = store_url or f"sqlite:///{self.root / 'casegate.db'}"
        self.log_path = self.root / "casegate.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {**os.environ, "CASEGATE_CONFIG": str(self.config)}
        self.env.pop("CASEGATE_STORE", None)
        # Prepended to the ``serve`` command line (e.g. unshare, to run it
        # under a host name of its own).
        self.wrapper: list[str] = []

    def run(self, *args: str, check: bool = True, process: bool = False) -> subprocess.CompletedProcess[str]:
        """One admin command, as ``casegate --config … --store … ARGS``.

        It runs in this process through click's test runner (the same code, its
        own stdout and stderr, the exit code), because a new Python per command
        cost 0.5 s of CPU, a minute for a test that sets up thirty objects.
        ``process=True`` runs the installed ``casegate`` command instead, for
        what only a real process shows (the entry point, a terminal, signals)."""
        argv = ["--config", str(self.config), "--store", self.store_url, *args]
        if args[:1] == ("init",) and not process:
            _start_from_template(self.store_url)
        if process:
            result = subprocess.run([*casegate_cmd(), *argv], env=self.env, capture_output=True,
                                    text=True, timeout=60)
        else:
            result = _in_process(argv, self.env)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json").stdout)

    def setup(self, *, mailboxes: Sequence[str] = ("support@example.com",),
              csrs: Sequence[tuple[str, str, str]] = ()) -> None:
        self.run("init")
        for address in mailboxes:
            self.run("mailbox", "add", address, "--name", "Example Support")
        for address, name, signature in csrs:
            self.run("csr", "add", address, "--name", name, "--signature", signature)

    def start(self, *, listen_port: int, reinject_port: int,
              trusted: Sequence[str] = ("127.0.0.1/32",), extra: Sequence[str] = (),
              timeout: float = 15.0) -> None:
        args = [*self.wrapper, *casegate_cmd(), "--config", str(self.config), "--store", self.store_url,
                "serve", "--listen", f"127.0.0.1:{listen_port}",
                "--reinject", f"127.0.0.1:{reinject_port}", *extra]
        for net in trusted:
            args += ["--trusted-network", net]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.listen_port = listen_port
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"casegate serve exited {self.proc.returncode}:\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", listen_port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"casegate serve not listening after {timeout}s:\n{self.log()}")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self.proc = None
        return code

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None
