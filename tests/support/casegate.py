"""Running the real ``casegate`` command: CLI calls and a ``serve`` process."""

from __future__ import annotations

import json
import os
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

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [*casegate_cmd(), "--config", str(self.config), "--store", self.store_url, *args]
        result = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=60)
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
