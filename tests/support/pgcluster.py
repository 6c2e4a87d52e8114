"""A private PostgreSQL cluster for fault tests: ``initdb`` into a temporary
folder as user postgres, ``pg_ctl start`` on a free loopback port, trust
authentication; stopped and removed afterwards. Never the shared server.

    with PgCluster() as pg:
        url = pg.create_database("casegate")     # postgresql://postgres@127.0.0.1:PORT/casegate
        pg.stop()                                 # pg_ctl stop -m fast: the outage
        pg.start()

Needs root (the cluster runs as user postgres) and the PostgreSQL binaries
(``/usr/lib/postgresql/*/bin`` or ``$CASEGATE_PG_BIN``).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.postfix import free_port


def pg_bin() -> Path | None:
    """The folder with initdb and pg_ctl, or None."""
    env = os.environ.get("CASEGATE_PG_BIN")
    candidates = [Path(env)] if env else sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for c in candidates:
        if (c / "initdb").exists() and (c / "pg_ctl").exists():
            return c
    return None


def pgcluster_missing() -> str | None:
    """Why a private cluster cannot run here, or None when it can."""
    if pg_bin() is None:
        return "no PostgreSQL binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin"
    if os.geteuid() != 0:
        return "a private PostgreSQL cluster needs root (it runs as user postgres)"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "there is no 'postgres' user"
    return None


class PgCluster:
    """One private cluster in a temporary folder, owned by user postgres."""

    def __init__(self, port: int | None = None) -> None:
        self.bin = pg_bin()
        if self.bin is None:
            raise RuntimeError(pgcluster_missing() or "no PostgreSQL binaries")
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="casegate-pg-"))
        self.data = self.root / "data"
        self.log_path = self.root / "postgres.log"
        shutil.chown(self.root, user="postgres", group="postgres")
        self.root.chmod(0o700)
        self._initialised = False
        self.running = False

    # --- commands, as user postgres --------------------------------------------
    def _run(self, *args: str, timeout: float = 60.0) -> str:
        cmd = ["runuser", "-u", "postgres", "--", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              cwd=self.root)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): "
                               f"{proc.stdout}{proc.stderr}\n{self.log_tail()}")
        return proc.stdout

    def init(self) -> None:
        assert self.bin is not None
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                  "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C.UTF-8")
        with (self.data / "postgresql.conf").open("a") as f:
            f.write(
                "\n# casegate fault test\n"
                "listen_addresses = '127.0.0.1'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{self.root}'\n"
                "max_connections = 50\n"
                "shared_buffers = 16MB\n"
            )
        self._initialised = True

    def start(self, timeout: float = 30.0) -> None:
        """``pg_ctl start -w``: returns once the server accepts connections."""
        assert self.bin is not None
        if not self._initialised:
            self.init()
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log_path),
                  "-w", "-t", str(int(timeout)), "start", timeout=timeout + 10)
        self.running = True

    def stop(self, mode: str = "fast", timeout: float = 30.0) -> None:
        """``pg_ctl stop -m MODE -w``: returns once the server has exited."""
        assert self.bin is not None
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w",
                  "-t", str(int(timeout)), "stop", timeout=timeout + 10)
        self.running = False

    def psql(self, sql: str, database: str = "postgres") -> str:
        assert self.bin is not None
        return self._run(str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port),
                         "-U", "postgres", "-d", database, "-Atqc", sql)

    def create_database(self, name: str = "casegate") -> str:
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def url(self, name: str = "casegate") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        """Stop (immediate, if still running) and remove the folder."""
        try:
            if self.running or (self.data / "postmaster.pid").exists():
                try:
                    self.stop(mode="immediate")
                except Exception:
                    pid_file = self.data / "postmaster.pid"
                    if pid_file.exists():
                        pid = int(pid_file.read_text().split()[0])
                        try:
                            os.kill(pid, 9)
                        except ProcessLookupError:
                            pass
                        time.sleep(0.5)
        finally:
            if not os.environ.get("CASEGATE_KEEP_POSTFIX"):
                shutil.rmtree(self.root, ignore_errors=True)
            else:
                print(f"kept PostgreSQL cluster folder {self.root}")

    def __enter__(self) -> PgCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
