"""casegate's command line: the composition root.

It reads the config file once into frozen values, opens the store and builds
what a command needs; nothing imports this module.

    casegate [--config FILE] [--store URL] COMMAND ...
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import logging.handlers
import os
import queue
import re
import secrets
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from email_validator import EmailNotValidError, validate_email

from casestore.store import Store, StoreError, aware, default_store_url, display_url
from rules.classify import parse_networks
from rules.logctx import LOG_FORMAT, BatchingListener, BatchStreamHandler, QueueIdFilter
from rules.vocab import Status

log = logging.getLogger("casegate")


# -- configuration -------------------------------------------------------------


def config_path_and_source(given: Path | None) -> tuple[Path, str]:
    """The config file to read, and where its name came from (for messages)."""
    if given is not None:
        return given, "--config"
    if os.environ.get("CASEGATE_CONFIG"):
        return Path(os.environ["CASEGATE_CONFIG"]), "$CASEGATE_CONFIG"
    if os.geteuid() == 0:
        return Path("/etc/casegate/casegate.toml"), "the default for root"
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "casegate" / "casegate.toml", "the default for a user other than root"


@dataclass(frozen=True)
class Config:
    path: Path
    exists: bool
    store: str
    secret: bytes | None
    case_prefix: str = "CS"
    organization: str = "Customer Support"
    templates_dir: Path | None = None
    serve: dict[str, Any] = field(default_factory=dict)
    milter: dict[str, Any] = field(default_factory=dict)
    dkim: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Any] = field(default_factory=dict)  # [files] message_max, case_max
    source: str = "--config"  # where the path came from: --config, $CASEGATE_CONFIG, a default
    log: str = "stderr"  # where serve and milter log: stderr, syslog, syslog:SOCKET|HOST:PORT

    def missing(self) -> str:
        """Why a command other than init refuses to run without the file."""
        return (f"no config file at {self.path} (from {self.source}): run `casegate init` to create "
                "it, or name the right one with --config or $CASEGATE_CONFIG")


# Every key the config file may hold, by table ("" is the top level).
CONFIG_KEYS: dict[str, frozenset[str]] = {
    "": frozenset({"store", "secret", "case_prefix", "organization", "templates_dir", "serve",
                   "milter", "dkim", "files", "log"}),
    "serve": frozenset({"listen", "reinject", "trusted_networks", "milter", "milter_stamps", "tick",
                        "outbox_lease", "workers"}),
    "milter": frozenset({"listen", "rate"}),
    "dkim": frozenset({"verify", "domain", "selector", "key"}),
    "files": frozenset({"message_max", "case_max"}),
}


def check_config_keys(path: Path, data: dict[str, Any]) -> None:
    """An unknown key is an error naming the key and the file (a typo must not
    silently fall back to a default)."""
    for table, known in CONFIG_KEYS.items():
        section = data if not table else data.get(table, {})
        if not isinstance(section, dict):
            continue
        for key in section:
            if key not in known:
                where = f"[{table}] " if table else ""
                raise click.ClickException(
                    f"{path}: unknown key {where}{key!r} (known: {', '.join(sorted(known))})")


def load_config(path: Path, store_override: str | None, source: str = "--config") -> Config:
    data: dict[str, Any] = {}
    exists = path.exists()
    if exists:
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise click.ClickException(f"cannot read config {path}: {exc}") from exc
        check_config_keys(path, data)
    for key, kind in (("secret", str), ("store", str), ("case_prefix", str), ("organization", str),
                      ("templates_dir", str), ("serve", dict), ("milter", dict), ("dkim", dict),
                      ("log", str)):
        if key in data and not isinstance(data[key], kind):
            raise click.ClickException(f"{path}: {key} must be a {'table' if kind is dict else 'string'}")
    secret_hex = data.get("secret")
    try:
        secret = bytes.fromhex(secret_hex) if secret_hex else None
    except ValueError:
        raise click.ClickException(f"{path}: secret must be hex (run `casegate init` "
                                   "after removing the line to make a new one)") from None
    prefix = str(data.get("case_prefix", "CS"))
    if not prefix.isalpha() or not prefix.isupper() or len(prefix) > 8:
        raise click.ClickException(f"{path}: case_prefix must be 1-8 capital letters, not {prefix!r}")
    templates = data.get("templates_dir")
    return Config(
        path=path,
        exists=exists,
        store=store_override or os.environ.get("CASEGATE_STORE") or data.get("store")
        or default_store_url(),
        secret=secret,
        case_prefix=prefix,
        organization=str(data.get("organization", "Customer Support")),
        templates_dir=Path(templates) if templates else None,
        serve=dict(data.get("serve", {})),
        milter=dict(data.get("milter", {})),
        dkim=dict(data.get("dkim", {})),
        files=dict(data.get("files", {})) if isinstance(data.get("files", {}), dict) else {},
        source=source,
        log=str(data.get("log", "stderr")),
    )


def file_limits(cfg: Config) -> dict[str, int]:
    """``[files] message_max`` and ``case_max`` (bytes, or 500k / 5MB / 1G) as Settings fields."""
    from rules import defaults
    from rules.files import parse_size

    out = {}
    for key, field_name, default in (("message_max", "files_message_max", defaults.FILES_MESSAGE_MAX),
                                     ("case_max", "files_case_max", defaults.FILES_CASE_MAX)):
        try:
            out[field_name] = parse_size(cfg.files.get(key, default))
        except ValueError as exc:
            raise click.ClickException(f"{cfg.path}: [files] {key}: {exc}") from None
    return out


def write_initial_config(path: Path, store_url: str) -> bytes:
    """A new config with a fresh secret; the file is private (0600)."""
    secret = secrets.token_bytes(32)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # the last folder only
    text = (
        "# casegate configuration (made by `casegate init`).\n"
        "# The secret signs Message-IDs and control headers: keep it private and\n"
        "# the same on every host that shares the store.\n"
        f'store = "{store_url}"\n'
        f'secret = "{secret.hex()}"\n'
        'case_prefix = "CS"\n'
        'organization = "Customer Support"\n'
        '# log = "syslog"               # serve/milter log to /dev/log (facility mail); default stderr\n'
        "\n[serve]\n"
        'listen = "127.0.0.1:10025"\n'
        'reinject = "127.0.0.1:10026"\n'
        "trusted_networks = []\n"
        '# tick = "30s"                  # how often the scheduler looks for due timers\n'
        '# milter = "127.0.0.1:10027"   # run the milter in the same process\n'
        '# workers = 2                   # processes sharing the listener ("auto": one per CPU)\n'
        "\n[milter]\n"
        '# listen = "127.0.0.1:10027"   # for `casegate milter` alone\n'
        '# rate = "30/3600"             # messages per sender per seconds to supervised addresses\n'
        "\n[dkim]\n"
        "verify = true\n"
        '# domain = "example.com"       # sign outgoing mail (see `casegate dkim keygen`)\n'
        '# selector = "casegate"\n'
        '# key = "/etc/casegate/dkim.key"\n'
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return secret


def add_secret(path: Path) -> bytes:
    """Put a new secret among the top-level keys (before the first [table])."""
    secret = secrets.token_bytes(32)
    lines = path.read_text().splitlines(keepends=True)
    at = next((i for i, line in enumerate(lines) if line.lstrip().startswith("[")), len(lines))
    lines.insert(at, f'secret = "{secret.hex()}"\n')
    path.write_text("".join(lines))
    return secret


# -- helpers -------------------------------------------------------------------


@dataclass
class App:
    loaded: Config
    _store: Store | None = None

    @property
    def config(self) -> Config:
        """The config, which must exist: every command but init reads it
        (a missing file is a typo or the wrong user, not "use the defaults")."""
        if not self.loaded.exists:
            raise click.ClickException(self.loaded.missing())
        return self.loaded

    def store(self, *, check: bool = True, create: bool = False) -> Store:
        """The store; only init passes ``create`` (and no ``check``)."""
        if self._store is None:
            url = self.loaded.store if create else self.config.store
            try:
                self._store = Store(url, create=create)
                if check:
                    self._store.check_schema()
            except StoreError as exc:
                raise click.ClickException(str(exc)) from exc
            except OSError as exc:
                raise click.ClickException(
                    f"cannot open the store {display_url(url)}: {exc}") from exc
        return self._store

    def close(self) -> None:
        """At the command's end: the store's connection closed (on SQLite the
        last one checkpoints the WAL into the file)."""
        if self._store is not None:
            try:
                self._store.close()
            except Exception:  # a connection that is already gone
                log.debug("closing the store failed", exc_info=True)
            self._store = None


@contextmanager
def store_errors() -> Iterator[None]:
    try:
        yield
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc


def valid_address(value: str) -> str:
    """The CLI's one address validator (mailbox, CSR, blacklist, --csr …):
    an address the milter and the filter can read back. email_validator
    checks the syntax; rules.blacklist.normalize_address, the check the milter
    applies to the rows it reads, must accept the result too, so
    ``help@example`` (no dot: the milter skips it) is refused here, with the
    reason."""
    from rules.blacklist import normalize_address

    try:
        result = validate_email(value, check_deliverability=False, globally_deliverable=False,
                                test_environment=True)
    except EmailNotValidError as exc:
        raise click.BadParameter(f"{value!r} is not a valid email address: {exc}") from None
    # The domain as Postfix sees it (IDNA A-labels); a non-ASCII local part
    # (SMTPUTF8) stays as it is.
    local = str(result.local_part)
    domain = str(result.ascii_domain or result.domain)
    address = f"{local}@{domain}".lower()
    try:
        return normalize_address(address)
    except ValueError as exc:
        reason = str(exc).replace(f"address {address!r}: ", "")
        raise click.BadParameter(f"{value!r} is not a valid email address: {reason} "
                                 "(use the full domain, e.g. help@example.com)") from None


def hostport(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise click.BadParameter(f"{what} must be HOST:PORT, not {value!r}")
    return host.strip("[]"), int(port)


def emit(rows: Any, as_json: bool, text: str) -> None:
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False, default=str))
    elif text and (header := _list_header()) is not None and _is_terminal():
        click.echo(_table([list(header), *(line.split("\t") for line in text.split("\n"))]))
    else:
        click.echo(text, nl=bool(text))


# -- on a terminal: header rows, progress bars ----------------------------------------

#: The header row of each list command, shown on a terminal only: in a pipe
#: the rows stay plain and tab-separated, as scripts (and tests) parse them.
#: Keyed by the command's path without "casegate"; a list command whose
#: columns change updates its line here (tests/component/test_cli_polish.py
#: compares the counts).
LIST_HEADERS: dict[str, tuple[str, ...]] = {
    "mailbox list": ("ADDRESS", "POOL"),
    "csr list": ("ADDRESS", "NAME", "POOLS"),
    "pool list": ("NAME", "CLOSED CASES", "CLOSE ON REPLY", "REMIND", "AUTOCLOSE"),
    "department list": ("NAME", "ADDRESS", "DEADLINE"),
    "question list": ("POOL", "QUESTION", "CHOICES", "REQUIRED"),
    "case list": ("NUMBER", "STATUS", "CUSTOMER", "ASSIGNEE", "SUBJECT"),
    "blacklist list": ("PATTERN", "SUBJECT", "REASON"),
    "approval list": ("ID", "CASE", "CSR", "STATUS", "TEXT"),
    "quarantine list": ("ID", "STATUS", "QUEUE ID", "FROM", "ATTEMPTS", "ERROR"),
    "product list": ("NAME", "MAILBOX", "KEYWORDS"),
    "template list": ("TEMPLATE", "LANGUAGES", "OVERRIDES"),
}


def _is_terminal(err: bool = False) -> bool:
    """Is stdout (stderr) a terminal? Tests replace this."""
    stream = sys.stderr if err else sys.stdout
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _list_header() -> tuple[str, ...] | None:
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return None
    return LIST_HEADERS.get(" ".join(ctx.command_path.split()[1:]))


def _table(rows: list[list[str]]) -> str:
    """Columns padded to their widest cell (the last one left ragged)."""
    widths: dict[int, int] = {}
    for row in rows:
        for i, cell in enumerate(row[:-1]):
            widths[i] = max(widths.get(i, 0), len(cell))
    return "\n".join("  ".join(cell.ljust(widths.get(i, 0)) if i < len(row) - 1 else cell
                               for i, cell in enumerate(row)).rstrip() for row in rows)


def _progress(items: list[Any], label: str) -> Any:
    """A progress bar on stderr when it is a terminal; in a pipe nothing."""
    if _is_terminal(err=True) and len(items) > 1:
        return click.progressbar(items, label=label, file=sys.stderr)
    return contextlib.nullcontext(items)


def log_handler(target: str, *, batched: bool = False) -> logging.Handler:
    """Where serve and milter log: ``stderr`` (journald reads it under
    systemd), ``syslog`` (the local syslog socket /dev/log, facility mail, so
    casegate's lines land in mail.log beside Postfix's), or
    ``syslog:/path/to/socket`` / ``syslog:HOST:PORT`` (UDP). With no syslog
    socket to talk to it says so on stderr and logs there instead.
    ``batched``: for a :class:`BatchingListener`, which writes each batch of
    lines to stderr at once (the stream is block-buffered, flushed by it)."""
    if target == "stderr" and batched:
        try:
            fd = sys.stderr.fileno()
        except (AttributeError, OSError, ValueError):  # a stand-in stderr (click's CliRunner)
            return log_handler("stderr")
        stream = open(fd, "w", buffering=1 << 16, encoding="utf-8",
                      errors="backslashreplace", closefd=False)
        handler: logging.Handler = BatchStreamHandler(stream)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        return handler
    if target == "stderr":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        return handler
    if target != "syslog" and not target.startswith("syslog:"):
        raise click.BadParameter(f"--log must be stderr, syslog, syslog:/SOCKET or syslog:HOST:PORT, "
                                 f"not {target!r}", param_hint="--log")
    where = target.partition(":")[2] or "/dev/log"
    address: str | tuple[str, int]
    if where.startswith("/"):
        address = where
    else:
        address = hostport(where, "--log syslog:HOST:PORT")
    try:
        if isinstance(address, str):  # SysLogHandler ignores a missing socket: probe it
            import socket

            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
                    probe.connect(address)
            except OSError:  # a stream socket (some syslog daemons), or none at all
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                    probe.connect(address)
        handler = logging.handlers.SysLogHandler(
            address=address, facility=logging.handlers.SysLogHandler.LOG_MAIL)
    except OSError as exc:
        click.echo(f"casegate: cannot log to syslog at {where} ({exc}): logging to stderr instead",
                   err=True)
        return log_handler("stderr", batched=batched)
    handler.ident = f"casegate[{os.getpid()}]: "
    # syslog stamps the time and host itself
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s [%(queue_id)s] %(message)s"))
    return handler


# ``serve --workers``: each line also names the process (syslog's ident does already).
WORKER_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d] [%(queue_id)s] %(message)s"


def setup_logging(level: str, target: str = "stderr", *,
                  worker: bool = False) -> logging.handlers.QueueListener:
    """Non-blocking logging: records go through a queue to stderr (journald)
    or syslog (:func:`log_handler`). ``worker``: a process of ``serve
    --workers``, whose lines name its pid."""
    q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    # No format here names the caller's function, file, line or thread: do
    # not look them up for every record (the logging HOWTO, "Optimization";
    # findCaller walks the stack of each call on the mail path).
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    handler = log_handler(target, batched=True)
    if worker and not isinstance(handler, logging.handlers.SysLogHandler):
        handler.setFormatter(logging.Formatter(WORKER_LOG_FORMAT))
    queue_handler = logging.handlers.QueueHandler(q)
    queue_handler.addFilter(QueueIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [queue_handler]
    root.setLevel(level.upper())
    for noisy in ("mail.log", "peewee", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    listener = BatchingListener(q, handler)
    listener.start()
    return listener


# -- commands ------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Config file (default: $CASEGATE_CONFIG, "
              "/etc/casegate/casegate.toml as root, else ~/.config/casegate/casegate.toml).")
@click.option("--store", "store_url", default=None,
              help="Store URL: sqlite:////path/casegate.db or postgresql://host/db "
              "(default: $CASEGATE_STORE, the config file, then a SQLite file).")
@click.version_option(package_name="casegate", prog_name="casegate")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None, store_url: str | None) -> None:
    """casegate: a customer-service case system in the Postfix mail flow."""
    path, source = config_path_and_source(config_path)
    ctx.obj = App(load_config(path, store_url, source))
    ctx.call_on_close(ctx.obj.close)


@main.command()
@click.pass_obj
def init(app: App) -> None:
    """Create or upgrade the store, and the config file with its secret. Idempotent.

    The one command that creates: the config (0600, its folder 0700 when made
    here) and a SQLite store (its folder 0700, the file 0600)."""
    cfg = app.loaded
    if not cfg.exists:
        try:
            write_initial_config(cfg.path, cfg.store)
        except OSError as exc:
            raise click.ClickException(
                f"cannot write {cfg.path}: {exc}; pass --config with a writable path") from exc
        click.echo(f"wrote {cfg.path} (with a new secret)")
    elif cfg.secret is None:
        add_secret(cfg.path)
        click.echo(f"added a secret to {cfg.path}")
    store = app.store(check=False, create=True)
    with store_errors():
        if _is_terminal(err=True):  # one migration at a time, for the bar
            applied = []
            with _progress(store.migration_names(), "migrating the store") as names:
                for name in names:
                    applied += store.migrate(through=name)
        else:
            applied = store.migrate()
    if applied:
        click.echo(f"store {store.display_url}: applied {', '.join(applied)}")
    else:
        click.echo(f"store {store.display_url}: up to date")
    for warning in store.wide_modes():
        click.echo(f"warning: {warning}", err=True)


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_obj
def backup(app: App, file: Path) -> None:
    """Copy the SQLite store to FILE, safely while casegate runs.

    SQLite's online backup API takes a consistent snapshot (writers go on);
    FILE is written 0600 and replaced only once complete and checked.
    Restore: stop casegate, copy FILE over the store (and remove any old
    -wal/-shm files), start casegate. A PostgreSQL store: use pg_dump (the
    command prints the recipe and exits 1). See docs/operations.md."""
    store = app.store(check=False)
    with store_errors():
        counts = store.backup(file)
    size = file.stat().st_size
    click.echo(f"backed up {store.path} to {file} ({size} bytes): "
               f"{counts.get('support_case', 0)} cases, {counts.get('message', 0)} messages, "
               f"{counts.get('attachment', 0)} files, {counts.get('outbox', 0)} outbox rows")


@main.group()
def mailbox() -> None:
    """Supervised addresses (support@, billing@ …)."""


@mailbox.command("add")
@click.argument("address")
@click.option("--pool", default="default", show_default=True, help="The pool of CSRs that serves it.")
@click.option("--name", "display_name", default="", help="Shown as sender name, e.g. 'Example Support'.")
@click.pass_obj
def mailbox_add(app: App, address: str, pool: str, display_name: str) -> None:
    """Supervise ADDRESS (also add it to Postfix's casegate_transport map)."""
    address = valid_address(address)
    if "+" in address.partition("@")[0]:
        raise click.BadParameter("a supervised address has no +tag (plus-addresses route to it)")
    with store_errors():
        store = app.store()
        store.add_mailbox(address, pool, display_name)
        staffed = bool(store.open_load(store.pool(pool, create=False)))
    click.echo(f"supervising {address} (pool {pool}); add it to Postfix's maps (then postmap each):\n"
               f"  casegate_transport:   {address}  casegate:[127.0.0.1]:10025\n"
               f"  casegate_recipients:  {address}  casegate_gate")
    if not staffed:
        click.echo(f"warning: pool {pool!r} has no available CSR yet: its cases stay unassigned "
                   f"until you run `casegate csr add ADDRESS --name NAME --pool {pool}`", err=True)


@mailbox.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_obj
def mailbox_list(app: App, as_json: bool) -> None:
    """List supervised addresses."""
    with store_errors():
        rows = [{"address": m.address, "pool": m.pool.name, "name": m.display_name,
                 # the mailbox's own template settings; null: its pool's
                 "language": m.language, "acknowledge": m.acknowledge, "greeting": m.greeting}
                for m in app.store().mailboxes()]
    emit(rows, as_json, "\n".join(f"{r['address']}\tpool={r['pool']}" for r in rows))


@main.group()
def csr() -> None:
    """Customer service reps."""


@csr.command("add")
@click.argument("address")
@click.option("--name", required=True, help='Full name, e.g. "Jane Doe".')
@click.option("--pool", "pools", multiple=True, metavar="NAME[:LEVEL[:PRIORITY]]",
              help="Pool(s) to join (default: default); level 1 gets new cases, 2 is escalation; "
              "priority orders #next (1 first).")
@click.option("--signature", default="", help="Signature added under the CSR's replies.")
@click.pass_obj
def csr_add(app: App, address: str, name: str, pools: tuple[str, ...], signature: str) -> None:
    """Add a CSR."""
    address = valid_address(address)
    if not name.strip():
        raise click.BadParameter("--name must not be empty")
    with store_errors():
        app.store().add_csr(address, name.strip(), pools or ("default",),
                            signature.replace("\\n", "\n"))
    click.echo(f"added CSR {name.strip()} <{address}>")


@csr.command("set")
@click.argument("address")
@click.option("--name", default=None, help="Full name.")
@click.option("--pool", "pools", multiple=True, metavar="NAME[:LEVEL[:PRIORITY]]",
              help="Replace the CSR's pools with these (repeatable).")
@click.option("--signature", default=None, help="Signature (\\n for new lines).")
@click.option("--needs-approval/--no-needs-approval", default=None,
              help="Hold the CSR's answers for their supervisor's approval.")
@click.option("--supervisor", default=None, metavar="ADDRESS", help="The CSR who approves them.")
@click.option("--footer-file", default=None, metavar="FILE",
              help="An HTML footer under the CSR's answers ('' to remove); cid:footer shows the image.")
@click.option("--footer-image", default=None, metavar="FILE",
              help="A JPEG/PNG/GIF the footer shows, sent inline ('' to remove).")
@click.pass_obj
def csr_set(app: App, address: str, name: str | None, pools: tuple[str, ...],
            signature: str | None, needs_approval: bool | None, supervisor: str | None,
            footer_file: str | None = None, footer_image: str | None = None) -> None:
    """Change a CSR: name, signature, pools with level and priority, approval."""
    address = valid_address(address)
    changes: dict[str, Any] = {}
    if supervisor is not None:
        changes["supervisor"] = valid_address(supervisor)
        if changes["supervisor"] == address:
            raise click.BadParameter("a CSR cannot approve their own answers", param_hint="--supervisor")
    if needs_approval is not None:
        changes["needs_approval"] = needs_approval
    if name is not None:
        if not name.strip():
            raise click.BadParameter("--name must not be empty")
        changes["name"] = name.strip()
    if signature is not None:
        changes["signature"] = signature.replace("\\n", "\n")
    changes.update(_footer_changes(footer_file, footer_image))
    if not changes and not pools:
        raise click.UsageError("nothing to set: give --name, --signature, --pool, --needs-approval, "
                               "--supervisor, --footer-file or --footer-image")
    with store_errors():
        store = app.store()
        if changes.get("needs_approval") or "supervisor" in changes:
            current = store.csr(address)
            boss = changes.get("supervisor", current.supervisor if current is not None else "")
            if changes.get("needs_approval", current.needs_approval if current else False):
                if not boss or store.csr(boss) is None:
                    raise click.ClickException("--needs-approval needs --supervisor with a CSR's address")
        csr = store.set_csr(address, pools=list(pools) if pools else None, **changes)
        shown = ", ".join(f"{m['pool']}:{m['level']}:{m['priority']}" for m in store.memberships(csr))
    click.echo(f"{address}: {', '.join(changes) or 'pools'} set; pools {shown}")


@csr.command("away")
@click.argument("address")
@click.option("--pool", default=None, help="Away in this pool only (default: all of theirs).")
@click.option("--until", default=None, metavar="WHEN", help="2026-12-24, 2026-12-24T09:00 (UTC) or 3d.")
@click.option("--deputy", default=None, metavar="ADDRESS", help="A CSR told about their cases meanwhile.")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_obj
def csr_away(app: App, address: str, pool: str | None, until: str | None, deputy: str | None,
             as_json: bool) -> None:
    """Mark a CSR away: no new cases; their cases' mail goes to the deputy or another CSR."""
    from rules.commands import Given

    words = [w for k, v in (("until", until), ("deputy", deputy), ("pool", pool)) if v for w in (k, v)]
    _staff(app, address, Given("away", " ".join(words)), as_json)


@csr.command("back")
@click.argument("address")
@click.option("--pool", default=None, help="Back in this pool only (default: all of theirs).")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_obj
def csr_back(app: App, address: str, pool: str | None, as_json: bool) -> None:
    """A CSR is back: new cases reach them again."""
    from rules.commands import Given

    _staff(app, address, Given("back", f"pool {pool}" if pool else ""), as_json)


def _staff(app: App, address: str, given: Any, as_json: bool) -> None:
    address = valid_address(address)
    with store_errors():
        result = _engine(app).staff_command(address, given)
        store = app.store()
        csr_row = store.csr(address)
        memberships = store.memberships(csr_row) if csr_row is not None else []
    if not result.ok:
        raise click.ClickException("nothing done: " + "; ".join(result.errors))
    emit({"address": address, "memberships": memberships}, as_json, "\n".join(
        f"{address}\t{m['pool']}\t" + (f"away until {m['away_until'] or 'further notice'}"
                                     + (f", deputy {m['deputy']}" if m["deputy"] else "")
                                     if m["away"] else "available") for m in memberships))


@csr.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_obj
def csr_list(app: App, as_json: bool) -> None:
    """List CSRs."""
    with store_errors():
        store = app.store()
        rows = [{"address": c.address, "name": c.name, "available": c.available,
                 "pools": store.csr_pools(c), "memberships": store.memberships(c),
                 "signature": c.signature,
                 "supervisor": c.supervisor if c.needs_approval else None} for c in store.csrs()]
    emit(rows, as_json, "\n".join(
        f"{r['address']}\t{r['name']}\tpools={','.join(r['pools'])}" for r in rows))


@main.group()
def pool() -> None:
    """Pools of CSRs and their policies."""


def pool_row(p: Any) -> dict[str, Any]:
    from rules.durations import format_duration

    return {"name": p.name, "rule": p.rule, "closed_policy": p.closed_policy,
            "close_on_reply": bool(p.close_on_reply),
            "remind_after": format_duration(p.remind_after or None),
            "autoclose_after": format_duration(p.autoclose_after or None),
            "unassigned_notify": p.unassigned_notify or None,
            "escalation_notice": bool(p.escalation_notice),
            "cc_participants": bool(p.cc_participants), "max_participants": p.max_participants,
            "language": p.language or "en", "acknowledge": bool(p.acknowledge),
            "greeting": p.greeting or "", "text_only": bool(p.text_only),
            "resolve_within": format_duration(p.resolve_within or None)}


@pool.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_obj
def pool_list(app: App, as_json: bool) -> None:
    """List pools with their policies."""
    with store_errors():
        rows = [pool_row(p) for p in app.store().pools()]
    emit(rows, as_json, "\n".join(
        f"{r['name']}\tclosed={r['closed_policy']}\tclose_on_reply={r['close_on_reply']}\t"
        f"remind={r['remind_after']}\tautoclose={r['autoclose_after']}" for r in rows))


def _duration(value: str | None, option: str) -> int | None:
    from rules.durations import parse_duration

    try:
        seconds = parse_duration(value or "")
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None
    return seconds


@pool.command("set")
@click.argument("name")
@click.option("--assign", "assign_rule", default=None, metavar="RULE",
              help="Who gets new cases: least_load, limit:N, random, round_robin, none, fifo.")
@click.option("--unassigned-notify", default=None, metavar="ADDRESS",
              help="Told once per case that found nobody ('' to stop).")
@click.option("--escalation-notice/--no-escalation-notice", default=None,
              help="Tell the customer when their case is escalated (template customer/escalated).")
@click.option("--closed-policy", default=None,
              help="A customer's mail to a closed case: reopen, new_linked, new_linked_after:DAYS.")
@click.option("--close-on-reply/--no-close-on-reply", default=None,
              help="Close the case each time a CSR answers.")
@click.option("--remind-after", default=None, metavar="DURATION",
              help="Remind the customer after this long without an answer (3d, 12h, off).")
@click.option("--autoclose-after", default=None, metavar="DURATION",
              help="Close the case after this long without an answer (14d, off).")
@click.option("--cc-participants/--no-cc-participants", default=None,
              help="A CSR's answer goes to the case's participants (Cc's) in Cc too (default on).")
@click.option("--max-participants", type=click.IntRange(0, 100), default=None,
              help="At most this many Cc's join one case (default 10).")
@click.option("--language", default=None, metavar="LANG",
              help="The language of the built-in templates: en or pl (docs/templates.md).")
@click.option("--acknowledge/--no-acknowledge", default=None,
              help="Acknowledge a new case to the customer (template customer/ack).")
@click.option("--greeting", default=None, metavar="TEXT",
              help='The customer\'s greeting, e.g. "Dear {first_name}," (\'\' for the language\'s).')
@click.option("--text-only/--no-text-only", default=None,
              help="Send plain text only (no HTML alternative).")
@click.option("--resolve-within", default=None, metavar="DURATION",
              help="The resolution target: opening to closing, for `casegate report` (2d, off).")
@click.pass_obj
def pool_set(app: App, name: str, assign_rule: str | None, unassigned_notify: str | None,
             escalation_notice: bool | None, closed_policy: str | None, close_on_reply: bool | None,
             remind_after: str | None, autoclose_after: str | None,
             cc_participants: bool | None = None, max_participants: int | None = None,
             language: str | None = None, acknowledge: bool | None = None,
             greeting: str | None = None, text_only: bool | None = None,
             resolve_within: str | None = None) -> None:
    """Change a pool's policies."""
    from rules.assign import AssignRule
    from rules.vocab import ClosedPolicy

    changes: dict[str, Any] = {}
    if assign_rule is not None:
        try:
            changes["rule"] = str(AssignRule.parse(assign_rule))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--assign") from None
    if escalation_notice is not None:
        changes["escalation_notice"] = escalation_notice
    if unassigned_notify is not None:
        changes["unassigned_notify"] = valid_address(unassigned_notify) if unassigned_notify else ""
    if closed_policy is not None:
        try:
            changes["closed_policy"] = str(ClosedPolicy.parse(closed_policy))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--closed-policy") from None
    if close_on_reply is not None:
        changes["close_on_reply"] = close_on_reply
    if remind_after is not None:
        changes["remind_after"] = _duration(remind_after, "--remind-after")
    if autoclose_after is not None:
        changes["autoclose_after"] = _duration(autoclose_after, "--autoclose-after")
    if cc_participants is not None:
        changes["cc_participants"] = cc_participants
    if max_participants is not None:
        changes["max_participants"] = max_participants
    changes.update(_template_pool_changes(language, acknowledge, greeting, text_only))
    if resolve_within is not None:
        changes["resolve_within"] = _duration(resolve_within, "--resolve-within")
    if not changes:
        raise click.UsageError("nothing to set: give --assign, --unassigned-notify, --escalation-notice, "
                               "--closed-policy, --cc-participants, --max-participants, "
                               "--close-on-reply, --remind-after, --autoclose-after, --language, "
                               "--acknowledge, --greeting, --text-only or --resolve-within")
    with store_errors():
        row = pool_row(app.store().set_pool(name, **changes))
    shown = {"rule": "rule"}
    click.echo(", ".join(f"{k} = {row[k]}" for k in row if k in changes or k == "name"
                         or shown.get(k) in changes))


@main.group()
def department() -> None:
    """Departments CSRs consult by mail (#consult NAME)."""


def department_row(d: Any) -> dict[str, Any]:
    from rules.durations import format_duration

    return {"name": d.name, "address": d.address, "deadline": format_duration(d.deadline)}


@department.command("add")
@click.argument("name")
@click.argument("address")
@click.option("--deadline", default="2d", show_default=True, metavar="DURATION",
              help="How long it has to answer before the overdue notices.")
@click.pass_obj
def department_add(app: App, name: str, address: str, deadline: str) -> None:
    """Add a department: its answers come from ADDRESS, proven as a CSR's are."""
    import re as _re

    if not _re.fullmatch(r"[A-Za-z][\w-]{0,63}", name):
        raise click.BadParameter(f"{name!r}: a department's name is a word (letters, digits, _ and -)")
    seconds = _duration(deadline, "--deadline")
    if not seconds:
        raise click.BadParameter("a deadline is a duration such as 2d", param_hint="--deadline")
    address = valid_address(address)
    with store_errors():
        store = app.store()
        if store.csr(address) is not None or store.mailbox(address) is not None:
            raise click.ClickException(f"{address} is a CSR or a supervised address, not a department")
        store.add_department(name, address, seconds)
    click.echo(f"department {name} <{address}>, deadline {deadline}: consult it with #consult {name}")


@department.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_obj
def department_list(app: App, as_json: bool) -> None:
    """List departments."""
    with store_errors():
        rows = [department_row(d) for d in app.store().departments()]
    emit(rows, as_json, "\n".join(f"{r['name']}\t{r['address']}\tdeadline={r['deadline']}" for r in rows))


@department.command("set")
@click.argument("name")
@click.option("--address", default=None)
@click.option("--deadline", default=None, metavar="DURATION")
@click.pass_obj
def department_set(app: App, name: str, address: str | None, deadline: str | None) -> None:
    """Change a department's address or deadline."""
    changes: dict[str, Any] = {}
    if address is not None:
        changes["address"] = valid_address(address)
    if deadline is not None:
        seconds = _duration(deadline, "--deadline")
        if not seconds:
            raise click.BadParameter("a deadline is a duration such as 2d", param_hint="--deadline")
        changes["deadline"] = seconds
    if not changes:
        raise click.UsageError("nothing to set: give --address or --deadline")
    with store_errors():
        row = department_row(app.store().set_department(name, **changes))
    click.echo(f"department {row['name']} <{row['address']}>, deadline {row['deadline']}")


@department.command("remove")
@click.argument("name")
@click.pass_obj
def department_remove(app: App, name: str) -> None:
    """Remove a department (not while it has unanswered consultations)."""
    with store_errors():
        removed = app.store().remove_department(name)
    if not removed:
        raise click.ClickException(f"no department named {name!r}")
    click.echo(f"department {name} removed")


@main.group()
def question() -> None:
    """Closing questionnaires: questions a CSR answers on #close (per pool)."""


@question.command("add")
@click.argument("pool_name", metavar="POOL")
@click.argument("name")
@click.option("--choices", default="", help='The allowed answers, comma-separated: "Router,Switch".')
@click.option("--required", is_flag=True, help="A case does not close without an answer.")
@click.option("--free-text", is_flag=True, help="Answers outside the choices are fine too.")
@click.pass_obj
def question_add(app: App, pool_name: str, name: str, choices: str, required: bool,
                 free_text: bool) -> None:
    """Add a closing question to POOL (answered as #close NAME=VALUE)."""
    import re as _re

    if not _re.fullmatch(r"[A-Za-z][\w-]{0,63}", name):
        raise click.BadParameter(f"{name!r}: a question's name is a word (letters, digits, _ and -)")
    values = [c.strip() for c in choices.split(",") if c.strip()]
    if any(" " in v or '"' in v for v in values):
        raise click.BadParameter("choices are single words (no spaces or quotes)", param_hint="--choices")
    if not values and not free_text:
        raise click.UsageError("give --choices, or --free-text for any answer")
    with store_errors():
        app.store().add_question(pool_name, name, choices=values, required=required, free_text=free_text)
    click.echo(f"pool {pool_name}: #close {name}={'|'.join(values) or '...'}"
               + (" (required)" if required else ""))


@question.command("list")
@click.option("--pool", "pool_name", default=None)
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_obj
def question_list(app: App, pool_name: str | None, as_json: bool) -> None:
    """List closing questions."""
    with store_errors():
        rows = [{"pool": q.pool.name, "name": q.name,
                 "choices": [c for c in q.choices.split(",") if c], "required": bool(q.required),
                 "free_text": bool(q.free_text)} for q in app.store().questions(pool_name)]
    emit(rows, as_json, "\n".join(
        "\t".join([r["pool"], r["name"], ",".join(r["choices"]) or "*"]
                  + (["required"] if r["required"] else [])) for r in rows))


@question.command("remove")
@click.argument("pool_name", metavar="POOL")
@click.argument("name")
@click.pass_obj
def question_remove(app: App, pool_name: str, name: str) -> None:
    """Remove a closing question (answers already given stay on their cases)."""
    with store_errors():
        removed = app.store().remove_question(pool_name, name)
    if not removed:
        raise click.ClickException(f"pool {pool_name} has no question {name!r}")
    click.echo(f"pool {pool_name}: question {name} removed")


# -- products and a mailbox's intake policy (issue 10) ----------------------------


@main.group()
def product() -> None:
    """Products: a case's product comes from a keyword in its subject or its mailbox."""


def product_row(p: Any) -> dict[str, Any]:
    return {"name": p.name, "mailbox": p.mailbox or None,
            "keywords": [k for k in (p.keywords or "").split(",") if k]}


def _product_name(name: str) -> str:
    name = " ".join(name.split())
    if not name or len(name) > 64 or "," in name:
        raise click.BadParameter(f"{name!r}: 1-64 characters, no comma", param_hint="NAME")
    return name


def _keywords(words: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for word in words:
        word = " ".join(word.split())
        if not word or "," in word or len(word) > 64:
            raise click.BadParameter(f"{word!r}: a word or phrase of 1-64 characters, no comma",
                                     param_hint="--keyword")
        if word.lower() not in (w.lower() for w in out):
            out.append(word)
    return out


@mailbox.command("set")
@click.argument("address")
@click.option("--subject-prefix", default=None, metavar="TEXT",
              help="A new case's subject must start with it ('' for any subject); others get a "
                   "polite answer that says so.")
@click.option("--unknown", "unknown_policy", type=click.Choice(["open", "reject", "hold"]), default=None,
              help="A sender new to this mailbox: open a case (default), reject politely (no case), "
                   "or hold the case for a CSR's #accept.")
@click.option("--pool", default=None, help="Move it to this pool (made when new); open cases keep their CSR.")
@click.option("--name", "display_name", default=None, help="The sender name ('' for none).")
@click.option("--language", default=None, metavar="LANG",
              help="The language of its built-in templates: en or pl ('' for the pool's).")
@click.option("--acknowledge", "acknowledge", flag_value="on", default=None,
              help="Acknowledge its new cases, whatever the pool says.")
@click.option("--no-acknowledge", "acknowledge", flag_value="off",
              help="Do not acknowledge its new cases, whatever the pool says.")
@click.option("--pool-acknowledge", "acknowledge", flag_value="pool",
              help="Acknowledge as its pool does (the default).")
@click.option("--greeting", default=None, metavar="TEXT",
              help='The customer\'s greeting, e.g. "Dear {first_name}," (\'\' for the pool\'s).')
@click.pass_obj
def mailbox_set(app: App, address: str, subject_prefix: str | None, unknown_policy: str | None,
                pool: str | None, display_name: str | None, language: str | None = None,
                acknowledge: str | None = None, greeting: str | None = None) -> None:
    """Change a supervised address: its pool, sender name, intake policy, and
    its own language, acknowledgement and greeting (beating its pool's)."""
    templates = _mailbox_template_changes(language, acknowledge, greeting)
    changes: dict[str, Any] = {}
    if pool is not None or display_name is not None:
        from casestore.admin import set_mailbox

        if pool is not None and not pool.strip():
            raise click.BadParameter("a pool needs a name", param_hint="--pool")
        with store_errors():
            m = set_mailbox(app.store(), valid_address(address), pool=pool, display_name=display_name)
        click.echo(f"{m.address}: pool {m.pool.name}"
                   + (f", name {m.display_name!r}" if m.display_name else ""))
        if subject_prefix is None and unknown_policy is None and not templates:
            return
    if subject_prefix is not None:
        prefix = " ".join(subject_prefix.split())
        if len(prefix) > 200:
            raise click.BadParameter("at most 200 characters", param_hint="--subject-prefix")
        changes["subject_prefix"] = prefix
    if unknown_policy is not None:
        changes["unknown_policy"] = unknown_policy
    if not changes and not templates:
        raise click.UsageError("nothing to set: give --pool, --name, --subject-prefix, --unknown, "
                               "--language, --acknowledge/--no-acknowledge/--pool-acknowledge "
                               "or --greeting")
    with store_errors():
        row = app.store().set_mailbox_intake(valid_address(address), **changes, **templates)
    if changes:
        click.echo(f"{row.address}: subject prefix {row.subject_prefix or '(none)'}, "
                   f"unknown senders: {row.unknown_policy}")
    if templates:
        shown = mailbox_templates(row)
        click.echo(f"{row.address}: " + ", ".join(f"{k} = {v}" for k, v in shown.items() if k in templates))


def _mailbox_template_changes(language: str | None, acknowledge: str | None,
                              greeting: str | None) -> dict[str, Any]:
    """A mailbox's own template settings; None (NULL) in each: its pool's."""
    changes = _template_pool_changes(language or None, None, greeting or None, None)
    if language is not None and not language.strip():
        changes["language"] = None
    if greeting is not None and not greeting.strip():
        changes["greeting"] = None
    if acknowledge is not None:
        changes["acknowledge"] = {"on": True, "off": False}.get(acknowledge)
    return changes


def mailbox_templates(m: Any) -> dict[str, Any]:
    """A mailbox's template settings as shown: its own value, else "pool"
    (inherited: the value in brackets)."""
    pool = m.pool
    default = "the language's"
    return {
        "language": m.language or f"pool ({pool.language or 'en'})",
        "acknowledge": ("on" if m.acknowledge else "off") if m.acknowledge is not None
        else f"pool ({'on' if pool.acknowledge else 'off'})",
        "greeting": m.greeting if m.greeting is not None else (
            default if m.language and m.language != (pool.language or "en")  # as the executor does
            else f"pool ({pool.greeting or default})"),
    }


@product.command("add")
@click.argument("name")
@click.option("--mailbox", default="", metavar="ADDRESS", help="Every case of this mailbox is about it.")
@click.option("--keyword", "keywords", multiple=True, metavar="WORD",
              help="A word (or phrase) in a new case's subject that names it; repeatable. "
                   "The name is one too.")
@click.pass_obj
def product_add(app: App, name: str, mailbox: str, keywords: tuple[str, ...]) -> None:
    """Add a product."""
    name = _product_name(name)
    words = _keywords(keywords)
    with store_errors():
        row = product_row(app.store().add_product(
            name, mailbox=valid_address(mailbox) if mailbox else "", keywords=words))
    click.echo(f"added product {row['name']}" + (f", mailbox {row['mailbox']}" if row["mailbox"] else "")
               + (f", keywords {', '.join(row['keywords'])}" if row["keywords"] else ""))


@product.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_obj
def product_list(app: App, as_json: bool) -> None:
    """List products with their mailbox and keywords."""
    with store_errors():
        rows = [product_row(p) for p in app.store().products()]
    if not rows and not as_json:
        click.echo("no products (`casegate product add NAME`)")
        return
    emit(rows, as_json, "\n".join(
        f"{r['name']}\t{r['mailbox'] or '-'}\t{', '.join(r['keywords']) or '-'}" for r in rows))


@product.command("set")
@click.argument("name")
@click.option("--mailbox", default=None, metavar="ADDRESS", help="Its mailbox ('' for none).")
@click.option("--keyword", "keywords", multiple=True, metavar="WORD",
              help="Replaces the keywords; repeatable.")
@click.option("--no-keywords", is_flag=True, help="Remove every keyword.")
@click.option("--rename", default=None, metavar="NEW", help="A new name (cases keep the old one).")
@click.pass_obj
def product_set(app: App, name: str, mailbox: str | None, keywords: tuple[str, ...], no_keywords: bool,
                rename: str | None) -> None:
    """Change a product's mailbox, keywords or name."""
    if keywords and no_keywords:
        raise click.UsageError("give --keyword or --no-keywords, not both")
    if mailbox is None and not keywords and not no_keywords and rename is None:
        raise click.UsageError("nothing to set: give --mailbox, --keyword, --no-keywords or --rename")
    with store_errors():
        row = product_row(app.store().set_product(
            name, mailbox=(valid_address(mailbox) if mailbox else "") if mailbox is not None else None,
            keywords=[] if no_keywords else (_keywords(keywords) if keywords else None),
            rename=_product_name(rename) if rename is not None else None))
    click.echo(f"{row['name']}: mailbox {row['mailbox'] or '-'}, keywords "
               f"{', '.join(row['keywords']) or '-'}")


@product.command("remove")
@click.argument("name")
@click.pass_obj
def product_remove(app: App, name: str) -> None:
    """Remove a product (its cases keep the name)."""
    with store_errors():
        if not app.store().remove_product(name):
            raise click.ClickException(f"no product named {name!r} (`casegate product list`)")
    click.echo(f"removed product {name}")


@main.group("case")
def case_group() -> None:
    """Cases."""


def case_row(case: Any) -> dict[str, Any]:
    from casestore.store import case_dict

    return case_dict(case)


STATUS_CHOICES = ["open", *[s.value for s in Status]]


@case_group.command("list")
@click.option("--status", type=click.Choice(STATUS_CHOICES), default=None,
              help="Only cases with this status (open: every status but closed).")
@click.option("--overdue", is_flag=True, help="Only cases with a consultation past its deadline.")
@click.option("--csr", default=None, metavar="ADDRESS",
              help="Only cases assigned to this CSR (none: unassigned).")
@click.option("--pool", "pool_name", default=None, metavar="NAME",
              help="Only cases of this pool's mailboxes.")
@click.option("--product", default=None, metavar="NAME", help="Only cases about this product.")
@click.option("--since", default=None, metavar="DATE",
              help="Only cases opened since: 2026-11-01, 2026-11-01T09:00 (UTC) or 7d.")
@click.option("--sort", type=click.Choice(["number", "created", "subject"]), default="number",
              show_default=True, help="Sort by case number, creation date or subject (A-Z).")
@click.option("--reverse", is_flag=True, help="Reverse the order (newest or Z first).")
@click.option("--limit", type=click.IntRange(0), default=None, help="At most this many cases.")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_obj
def case_list(app: App, status: str | None, overdue: bool, csr: str | None, pool_name: str | None,
              product: str | None, since: str | None, sort: str, reverse: bool, limit: int | None,
              as_json: bool) -> None:
    """List cases, filtered and sorted in the database (indexed columns)."""
    from casestore.search import list_cases

    since_at = _since(since) if since else None
    with store_errors():
        rows = list_cases(app.store(), status=status, csr=csr, pool=pool_name, product=product,
                          overdue=overdue, since=since_at, sort=sort, reverse=reverse, limit=limit)
    emit(rows, as_json, "\n".join(
        f"{r['number']}\t{r['status']}\t{r['customer']}\t{r['assignee'] or '-'}\t{r['subject']}"
        for r in rows))


def _since(value: str) -> dt.datetime:
    """--since: an ISO date or date-time (UTC), or a duration back from now (7d, 12h)."""
    if re.fullmatch(r"\d+[smhdw]", value.strip()):
        seconds = _duration(value.strip(), "--since") or 0
        return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)
    try:
        at = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date: use 2026-11-01, 2026-11-01T09:00 "
                                 "or a duration such as 7d", param_hint="--since") from None
    return at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at.astimezone(dt.UTC)


@case_group.command("search")
@click.argument("text")
@click.option("--body", is_flag=True, help="Search the messages' text too.")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True,
              help="At most this many cases.")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_obj
def case_search(app: App, text: str, body: bool, limit: int, as_json: bool) -> None:
    """Find cases by number, customer name or address, subject (and with
    --body the messages' text): every word must start a word there; case and
    accents do not matter. Newest first. Exit 1 when nothing is found."""
    from casestore.search import search

    with store_errors():
        rows = search(app.store(), text, body=body, limit=limit)
    emit(rows, as_json, "\n".join(
        f"{r['number']}\t{r['status']}\t{r['customer_name'] or '-'} <{r['customer']}>\t"
        f"{r['assignee'] or '-'}\t{r['subject']}" for r in rows))
    if not rows:
        if not as_json:
            click.echo(f"no case matches {text!r}", err=True)
        sys.exit(1)


@case_group.command("show")
@click.argument("number")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_obj
def case_show(app: App, number: str, as_json: bool) -> None:
    """Show a case: its whole history in time order (messages, notes, events), files, links."""
    with store_errors():
        store = app.store()
        case = store.case(number.upper())
        if case is None:
            raise click.ClickException(f"no case {number}; `casegate case list` shows them")
        row = store.case_history(case)
        from casestore.search import timeline, timeline_lines

        row["timeline"] = timeline(store, case, row)
    if as_json:
        emit(row, True, "")
        return
    lines = [f"{row['number']}  [{row['status']}]  {row['subject']}",
             f"customer: {row['customer_name']} <{row['customer']}>",
             f"assignee: {row['assignee'] or '-'}   created: {row['created']}"
             + (f"   closed: {row['closed']}" if row["closed"] else "")]
    if row.get("product"):
        lines.append(f"product: {row['product']}")
    if row["follow_up_of"]:
        lines.append(f"follow-up of: {row['follow_up_of']}")
    if row["follow_ups"]:
        lines.append(f"follow-ups: {', '.join(row['follow_ups'])}")
    if row["rating"] is not None:
        lines.append(f"rating: {row['rating']}/5" + (f" ({row['rating_comment']})"
                                                      if row["rating_comment"] else ""))
    lines.append("")
    lines += timeline_lines(row["timeline"])
    if row["files"]:
        lines.append("")
        lines += [f"file {f['id']}: {f['name']} ({f['type']}, {f['size']} bytes, "
                  f"{'inline' if f['inline'] else 'attachment'})" for f in row["files"]]
    pending = [t for t in row["timers"] if t["status"] == "pending"]
    if pending:
        lines.append("")
        lines += [f"timer: {t['kind']} due {t['due']}" for t in pending]
    click.echo("\n".join(lines))


def _engine(app: App) -> Any:
    from smtpd_hook.engine import Engine
    from smtpd_hook.settings import Settings

    cfg = app.config
    if cfg.secret is None:
        raise click.ClickException(f"no secret in {cfg.path}: run `casegate init` first")
    sign, _ = dkim_functions(cfg)
    settings = Settings(secret=cfg.secret, case_prefix=cfg.case_prefix,
                        organization=cfg.organization, templates_dir=cfg.templates_dir,
                        **file_limits(cfg))
    return Engine(app.store(), settings, sign=sign)


def _text(text: str | None, text_file: Any) -> str:
    if text is not None and text_file is not None:
        raise click.UsageError("give --text or --text-file, not both")
    if text_file is not None:
        return str(text_file.read())
    return (text or "").replace("\\n", "\n")


def run_commands(app: App, number: str, actor: str | None, given: list[Any], text: str,
                 as_json: bool) -> None:
    """One or more commands on a case through the engine, as if a CSR mailed them."""
    if actor:
        actor = valid_address(actor)
    with store_errors():
        engine = _engine(app)
        result = engine.command(number, actor=actor, commands=given, text=text)
        case = app.store().case(result.number) if result.number else None
    if not result.ok:
        raise click.ClickException("nothing done: " + "; ".join(result.errors))
    row = {"number": result.number, "outcome": str(result.outcome),
           "status": case.status if case is not None else None,
           "assignee": case.assignee.address if case is not None and case.assignee_id else None,
           "sent": list(result.sent)}
    emit(row, as_json, f"{row['number']}: {row['outcome']}, status {row['status']}"
         + (f", sent {', '.join(row['sent'])}" if row["sent"] else ""))


def _given(name: str, arg: str = "") -> Any:
    from rules.commands import Given

    return Given(name, arg)


_csr_option = click.option("--csr", "actor", default=None, metavar="ADDRESS",
                           help="The CSR who acts (signs any text to the customer); default: admin.")
_text_options = [
    click.option("--text", default=None, help="Text for the customer (\\n for new lines)."),
    click.option("--text-file", type=click.File("r"), default=None, help="... or read it from a file."),
]
_json_option = click.option("--json", "as_json", is_flag=True, help="JSON output.")


def _with(options: list[Any]) -> Any:
    def wrap(fn: Any) -> Any:
        for option in reversed(options):
            fn = option(fn)
        return fn
    return wrap


@case_group.command("close")
@click.argument("number")
@_csr_option
@_with(_text_options)
@click.option("--answer", "answers", multiple=True, metavar="NAME=VALUE",
              help="An answer to the pool's closing questions (repeatable).")
@_json_option
@click.pass_obj
def case_close(app: App, number: str, actor: str | None, text: str | None, text_file: Any,
               answers: tuple[str, ...], as_json: bool) -> None:
    """Close a case: the customer gets the closing notice and the survey (any text first)."""
    for answer in answers:
        if "=" not in answer:
            raise click.BadParameter(f"{answer!r}: give NAME=VALUE", param_hint="--answer")
    pairs = " ".join(f'{k}="{v}"' if " " in v else f"{k}={v}"
                     for k, _, v in (a.partition("=") for a in answers))
    run_commands(app, number, actor, [_given("close", pairs)], _text(text, text_file), as_json)


@case_group.command("reopen")
@click.argument("number")
@_csr_option
@_with(_text_options)
@_json_option
@click.pass_obj
def case_reopen(app: App, number: str, actor: str | None, text: str | None, text_file: Any,
                as_json: bool) -> None:
    """Reopen a closed case."""
    run_commands(app, number, actor, [_given("reopen")], _text(text, text_file), as_json)


@case_group.command("note")
@click.argument("number")
@click.argument("words", nargs=-1)
@_csr_option
@click.option("--text-file", type=click.File("r"), default=None, help="Read the note from a file.")
@_json_option
@click.pass_obj
def case_note(app: App, number: str, words: tuple[str, ...], actor: str | None, text_file: Any,
              as_json: bool) -> None:
    """Add an internal note (never sent to the customer): casegate case note CS0000001 Called him."""
    text = _text(" ".join(words) if words else None, text_file)
    run_commands(app, number, actor, [_given("note")], text, as_json)


@case_group.command("assign")
@click.argument("number")
@click.argument("address")
@_csr_option
@click.option("--note", default="", help="A private note for the new assignee.")
@_json_option
@click.pass_obj
def case_assign(app: App, number: str, address: str, actor: str | None, note: str,
                as_json: bool) -> None:
    """Assign a case to the CSR at ADDRESS (who is notified)."""
    run_commands(app, number, actor, [_given("assign", valid_address(address))],
                 note.replace("\\n", "\n"), as_json)


@case_group.command("take")
@click.argument("number")
@click.option("--csr", "actor", required=True, metavar="ADDRESS", help="The CSR who takes it.")
@_json_option
@click.pass_obj
def case_take(app: App, number: str, actor: str, as_json: bool) -> None:
    """Assign a case to --csr."""
    run_commands(app, number, actor, [_given("take")], "", as_json)


@case_group.command("solution")
@click.argument("number")
@click.option("--csr", "actor", required=True, metavar="ADDRESS", help="The CSR who proposes it.")
@_with(_text_options)
@_json_option
@click.pass_obj
def case_solution(app: App, number: str, actor: str, text: str | None, text_file: Any,
                  as_json: bool) -> None:
    """Propose a solution: the customer answers Accept or Reject."""
    run_commands(app, number, actor, [_given("solution")], _text(text, text_file), as_json)


@case_group.command("status")
@click.argument("number")
@click.argument("status", required=False, type=click.Choice(STATUS_CHOICES[1:]))
@_csr_option
@_json_option
@click.pass_obj
def case_status(app: App, number: str, status: str | None, actor: str | None, as_json: bool) -> None:
    """Show a case's status, or set it (closed: as `case close`; reopened: as `case reopen`)."""
    if status is None:
        with store_errors():
            case = app.store().case(number.upper())
        if case is None:
            raise click.ClickException(f"no case {number}; `casegate case list` shows them")
        emit({"number": case.number, "status": case.status}, as_json, case.status)
        return
    given = {"closed": _given("close"), "reopened": _given("reopen")}.get(status) or \
        _given("status", status)
    run_commands(app, number, actor, [given], "", as_json)


@case_group.command("next")
@click.option("--csr", "actor", required=True, metavar="ADDRESS", help="The CSR who pulls a case.")
@_json_option
@click.pass_obj
def case_next(app: App, actor: str, as_json: bool) -> None:
    """Give --csr the oldest waiting case of their pools (#next by mail)."""
    with store_errors():
        result = _engine(app).next_case(valid_address(actor))
    if not result.ok:
        raise click.ClickException("nothing done: " + "; ".join(result.errors))
    emit({"number": result.number, "outcome": str(result.outcome), "sent": list(result.sent)},
         as_json, f"{result.number}: assigned to {actor}; sent {', '.join(result.sent)}")


@case_group.command("open")
@click.option("--customer", required=True, help="The customer's address (\"Name <addr>\" works too).")
@click.option("--mailbox", required=True, help="The supervised address the case belongs to.")
@click.option("--csr", "actor", required=True, metavar="ADDRESS", help="The CSR who writes first.")
@click.option("--subject", required=True)
@click.option("--body-file", type=click.File("r"), required=True, help="The first message ('-': stdin).")
@_json_option
@click.pass_obj
def case_open(app: App, customer: str, mailbox: str, actor: str, subject: str, body_file: Any,
              as_json: bool) -> None:
    """Open a case proactively: the CSR's text goes to the customer, whose answers come back to it."""
    from email.utils import formataddr, parseaddr

    name, address = parseaddr(customer)
    customer = formataddr((name, valid_address(address))) if name else valid_address(address)
    with store_errors():
        result = _engine(app).open_case(customer=customer, mailbox=valid_address(mailbox),
                                        csr=valid_address(actor), subject=subject,
                                        text=body_file.read())
    if not result.ok:
        raise click.ClickException("nothing done: " + "; ".join(result.errors))
    emit({"number": result.number, "outcome": str(result.outcome), "sent": list(result.sent)},
         as_json, f"opened {result.number}; sent {', '.join(result.sent)}")


@case_group.command("accept")
@click.argument("number")
@_csr_option
@_with(_text_options)
@_json_option
@click.pass_obj
def case_accept(app: App, number: str, actor: str | None, text: str | None, text_file: Any,
                as_json: bool) -> None:
    """Open a held case (mailbox --unknown hold): #accept; the customer gets the acknowledgement."""
    run_commands(app, number, actor, [_given("accept")], _text(text, text_file), as_json)


@case_group.command("refuse")
@click.argument("number")
@_csr_option
@click.option("--note", default="", help="An internal note: why.")
@_json_option
@click.pass_obj
def case_refuse(app: App, number: str, actor: str | None, note: str, as_json: bool) -> None:
    """Refuse a held case: #reject; closed, the sender gets the polite refusal."""
    run_commands(app, number, actor, [_given("reject")], note.replace("\\n", "\n"), as_json)


@case_group.command("file")
@click.argument("file_id", type=int)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this file (default: standard output).")
@click.pass_obj
def case_file(app: App, file_id: int, output: Path | None) -> None:
    """Retrieve a stored attachment by its id (see `case show`)."""
    with store_errors():
        att = app.store().attachment(file_id)
        if att is None:
            raise click.ClickException(f"no file with id {file_id}")
        data = bytes(att.data)
    if output:
        try:
            output.write_bytes(data)
        except OSError as exc:
            raise click.ClickException(f"cannot write {output}: {exc}") from exc
        click.echo(f"wrote {att.filename} ({len(data)} bytes) to {output}", err=True)
    else:
        sys.stdout.buffer.write(data)


@main.command()
@click.option("--listen", default=None, help="HOST:PORT for Postfix's casegate transport "
              "(default 127.0.0.1:10025).")
@click.option("--reinject", default=None, help="HOST:PORT of Postfix's filter-free smtpd "
              "(default 127.0.0.1:10026).")
@click.option("--trusted-network", "trusted", multiple=True,
              help="CIDR whose clients may answer as CSRs (repeatable).")
@click.option("--milter", "milter_listen", default=None,
              help="Also run the milter, on HOST:PORT or unix:/path.")
@click.option("--tick", default=None, metavar="DURATION",
              help="How often the scheduler fires due timers (default 30s; [serve] tick).")
@click.option("--workers", default=None, metavar="N|auto",
              help="Worker processes sharing the listener (default 1; [serve] workers; "
              "auto: one per CPU).")
@click.option("--log-level", default="INFO", show_default=True)
@click.option("--log", "log_target", default=None, metavar="stderr|syslog|syslog:SOCKET|syslog:HOST:PORT",
              help="Where to log (default: the config's log, else stderr).")
@click.pass_obj
def serve(app: App, listen: str | None, reinject: str | None, trusted: tuple[str, ...],
          milter_listen: str | None, tick: str | None, log_level: str,
          log_target: str | None = None, workers: str | None = None) -> None:
    """Run the content filter (and the milter) until SIGTERM.

    With --workers N, a parent process binds the listener and runs N worker
    processes on it, each a whole filter (with its outbox and scheduler), and
    restarts one that dies; SIGTERM and SIGHUP go to every worker."""
    from smtpd_hook.app import ServiceFailed
    from smtpd_hook.app import serve as run_serve
    from smtpd_hook.settings import Settings
    from smtpd_hook.workers import parse_workers

    cfg = app.config
    if cfg.secret is None:
        raise click.ClickException(f"no secret in {cfg.path}: run `casegate init` first")
    conf = cfg.serve
    listen_at = hostport(listen or str(conf.get("listen", "127.0.0.1:10025")), "--listen")
    milter_at = milter_listen or conf.get("milter")
    try:
        worker_count = parse_workers(workers if workers is not None else conf.get("workers", 1))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--workers" if workers else "[serve] workers") from None
    from rules import defaults
    from rules.durations import parse_duration

    def build(cfg: Config) -> Settings:
        """The settings from a config (command-line options win); serve's
        SIGHUP calls it again with the file read anew."""
        conf = cfg.serve
        if cfg.secret is None:
            raise click.ClickException(f"no secret in {cfg.path}: run `casegate init` first")
        reinject_at = hostport(reinject or str(conf.get("reinject", "127.0.0.1:10026")), "--reinject")
        configured = conf.get("trusted_networks", [])
        if isinstance(configured, str):
            configured = [configured]
        try:
            networks = parse_networks(list(trusted) or [str(n) for n in configured])
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--trusted-network") from None
        tick_text = tick or str(conf.get("tick", f"{defaults.TICK_SECONDS:g}s"))
        try:
            tick_seconds = parse_duration(tick_text, allow_off=False)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--tick") from None
        if not tick_seconds:
            raise click.BadParameter("the tick must be at least 1s", param_hint="--tick")
        # How long an outgoing message stays leased to the host sending it: after
        # a crash another host sharing the store sends it once this ran out.
        lease_text = str(conf.get("outbox_lease", "120s"))
        try:
            outbox_lease = parse_duration(lease_text, allow_off=False)
        except ValueError as exc:
            raise click.BadParameter(f"[serve] outbox_lease: {exc}") from None
        if not outbox_lease:
            raise click.BadParameter("[serve] outbox_lease must be at least 1s")
        settings = Settings(
            secret=cfg.secret,
            case_prefix=cfg.case_prefix,
            organization=cfg.organization,
            trusted_networks=networks,
            templates_dir=cfg.templates_dir,
            reinject_host=reinject_at[0],
            reinject_port=reinject_at[1],
            tick_seconds=float(tick_seconds),
            outbox_lease_seconds=int(outbox_lease),
            # With the milter in front (here, or `casegate milter` with
            # milter_stamps = true), a client address counts only from its stamp.
            require_stamp=bool(milter_at) or bool(conf.get("milter_stamps", False)),
            **file_limits(cfg),
        )
        broken = template_problems(cfg)
        if broken:
            raise click.ClickException("broken template override(s); fix them (`casegate template "
                                       "check`) or remove them:\n  " + "\n  ".join(broken))
        return settings

    # --store or $CASEGATE_STORE chose the store: the file's store = is not the one in use
    app_store_given = cfg.store != load_config(cfg.path, None, cfg.source).store

    def reread(warn: bool = True) -> Settings:
        fresh = load_config(cfg.path, None, cfg.source)
        if not fresh.exists:
            raise click.ClickException(fresh.missing())
        for what, old, new in (("store", cfg.store, fresh.store if not app_store_given else cfg.store),
                               ("[serve] listen", conf.get("listen"), fresh.serve.get("listen")),
                               ("[serve] milter", conf.get("milter"), fresh.serve.get("milter")),
                               ("[serve] workers", conf.get("workers"), fresh.serve.get("workers"))):
            if old != new and warn:
                log.warning("SIGHUP: %s changed (%s -> %s): that needs a restart", what,
                            display_url(str(old)) if what == "store" else old,
                            display_url(str(new)) if what == "store" else new)
        return build(fresh)

    from casestore.store import display_url

    settings = build(cfg)
    networks = settings.trusted_networks
    store = app.store()
    sign, dkim_verify = dkim_functions(cfg)
    if worker_count > 1:
        serve_workers(app, worker_count, store, settings, listen_at=listen_at, milter_at=milter_at,
                      sign=sign, dkim_verify=dkim_verify, reread=reread, log_level=log_level,
                      log_target=log_target or cfg.log)
        return
    milter_reloaders: list[Any] = []
    extras = [milter_task(app, milter_at, cfg.secret, milter_reloaders)] if milter_at else []
    listener = setup_logging(log_level, log_target or cfg.log)

    # What a sysadmin checks first: which config, which store, which listeners.
    log.info("casegate %s: config %s, store %s, trusted networks %s, milter %s, tick %gs",
             _version(), cfg.path, display_url(cfg.store),
             ", ".join(str(n) for n in networks) or "none", milter_at or "not in this process",
             settings.tick_seconds)
    try:
        asyncio.run(run_serve(store, settings, listen=listen_at, extras=extras, sign=sign,
                              dkim_verify=dkim_verify, reload_settings=reread,
                              reloaders=milter_reloaders))
    except ServiceFailed as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {listen_at[0]}:{listen_at[1]}: {exc}") from exc
    finally:
        listener.stop()


def serve_workers(app: App, count: int, store: Store, settings: Any, *, listen_at: tuple[str, int],
                  milter_at: str | None, sign: Any, dkim_verify: Any, reread: Any, log_level: str,
                  log_target: str) -> None:
    """``serve --workers N``: bind the listener here, fork N workers that
    serve on it (smtpd_hook/workers.py); the milter, if any, runs in worker 1."""
    import socket

    from smtpd_hook.app import serve as run_serve
    from smtpd_hook.workers import Supervisor

    cfg = app.config
    host, port = listen_at
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, backlog=100)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from exc
    # The parent logs straight to its handler (no logging thread: fork from
    # a single-threaded process), and keeps no store connection.
    handler = log_handler(log_target)
    if not isinstance(handler, logging.handlers.SysLogHandler):
        handler.setFormatter(logging.Formatter(WORKER_LOG_FORMAT))
    handler.addFilter(QueueIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(log_level.upper())
    store.close()
    bound = sock.getsockname()
    log.info("casegate %s: config %s, store %s, trusted networks %s, milter %s, tick %gs, "
             "%d workers on %s:%d", _version(), cfg.path, display_url(cfg.store),
             ", ".join(str(n) for n in settings.trusted_networks) or "none",
             f"{milter_at} (worker 1)" if milter_at else "not in this process",
             settings.tick_seconds, count, bound[0], bound[1])
    current = [settings]

    def reload() -> None:  # what workers started from now on begin with
        current[0] = reread(warn=False)

    def child(index: int, pending: set[int]) -> int:
        for old in logging.getLogger().handlers:
            old.close()
        listener = setup_logging(log_level, log_target, worker=True)
        try:
            reloaders: list[Any] = []
            extras = ([milter_task(app, milter_at, cfg.secret, reloaders)]
                      if milter_at and index == 0 and cfg.secret else [])

            def ready(bound: tuple[str, int]) -> None:
                # signals that came before serve's own handlers: act on them now
                for sig in sorted(pending):
                    os.kill(os.getpid(), sig)

            log.info("worker %d of %d", index + 1, count)
            asyncio.run(run_serve(store, current[0], listen=listen_at, sock=sock, extras=extras,
                                  sign=sign, dkim_verify=dkim_verify, reload_settings=reread,
                                  reloaders=reloaders, ready=ready))
            return 0
        except Exception:
            log.exception("worker %d failed", index + 1)
            return 1
        finally:
            listener.stop()

    code = Supervisor(count, child, on_reload=reload).run()
    sock.close()
    if code:
        log.error("stopped: the workers kept failing")
        sys.exit(code)
    log.info("stopped")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("casegate")
    except PackageNotFoundError:  # pragma: no cover - run from a bare checkout
        return "unknown"


def dkim_functions(cfg: Config) -> tuple[Any, Any]:
    """The signer (when a key is configured) and the verifier (unless disabled)."""
    from smtpd_hook import dkim

    sign = None
    if cfg.dkim.get("key"):
        try:
            signer = dkim.Signer.load(str(cfg.dkim.get("domain", "")),
                                      str(cfg.dkim.get("selector", "casegate")),
                                      Path(cfg.dkim["key"]))
        except ValueError as exc:
            raise click.ClickException(f"{cfg.path} [dkim]: {exc}") from exc
        sign = signer.sign
    verify = None
    if cfg.dkim.get("verify", True):
        def verify(raw: bytes) -> list[tuple[str, bool, str]]:
            return [(r.domain.lower(), r.passed, r.reason) for r in dkim.verify(raw)]
    return sign, verify


def parse_rate(value: str | None) -> Any:
    from milter.policy import RateLimit

    if not value or value == "off":
        return None
    count, _, window = str(value).partition("/")
    if not count.isdigit() or not window.isdigit() or int(count) < 1 or int(window) < 1:
        raise click.BadParameter(f"rate must be MESSAGES/SECONDS (e.g. 30/3600) or off, not {value!r}")
    return RateLimit(int(count), float(window))


def build_milter(app: App, listen: str, secret: bytes, rate: str | None) -> Any:
    from milter.policy import StaticPolicy
    from milter.server import MilterServer
    from rules.blacklist import Blacklist, Entry

    store = app.store()

    def entries() -> list[Entry]:
        return [Entry(e.pattern, e.subject, e.reason) for e in store.blacklist()]

    with store_errors():
        supervised = [m.address for m in store.mailboxes()]
        initial = Blacklist(entries(), strict=False)
    policy = StaticPolicy(initial, supervised, rate_limit=parse_rate(rate),
                          entries_source=entries,
                          supervised_source=lambda: [m.address for m in store.mailboxes()])
    if listen.startswith("unix:"):
        target = listen
    else:
        host, port = hostport(listen.removeprefix("inet:"), "--milter")
        target = f"{host}:{port}"
    return MilterServer(policy, target, secret=secret)


def milter_task(app: App, listen: str, secret: bytes, reloaders: list[Any] | None = None) -> Any:
    """The milter as one of serve's tasks; its SIGHUP reload (the blacklist
    and the supervised addresses read again) goes into ``reloaders``."""
    server = build_milter(app, listen, secret, app.config.milter.get("rate", "30/3600"))
    if reloaders is not None:
        reloaders.append(server._policy.refresh)

    async def run(stop: asyncio.Event) -> None:
        try:
            await server.start()
        except OSError as exc:
            raise OSError(f"the milter cannot listen on {listen}: {exc.strerror or exc}") from exc
        log.info("milter listening on %s", ", ".join(server.addresses))
        try:
            await stop.wait()
        finally:
            await server.close()

    run.service = "milter"  # type: ignore[attr-defined]  # named in serve's log
    return run


@main.command("milter")
@click.option("--listen", default=None, help="HOST:PORT or unix:/path (default 127.0.0.1:10027).")
@click.option("--rate", default=None, help="Flood limit: MESSAGES/SECONDS per sender, or off.")
@click.option("--log-level", default="INFO", show_default=True)
@click.option("--log", "log_target", default=None, metavar="stderr|syslog|syslog:SOCKET|syslog:HOST:PORT",
              help="Where to log (default: the config's log, else stderr).")
@click.pass_obj
def milter_cmd(app: App, listen: str | None, rate: str | None, log_level: str,
               log_target: str | None = None) -> None:
    """Run the milter alone until SIGTERM (Postfix: smtpd_milters)."""
    import signal

    cfg = app.config
    if cfg.secret is None:
        raise click.ClickException(f"no secret in {cfg.path}: run `casegate init` first")
    server = build_milter(app, listen or cfg.milter.get("listen", "127.0.0.1:10027"), cfg.secret,
                          rate or cfg.milter.get("rate", "30/3600"))
    listener = setup_logging(log_level, log_target or cfg.log)
    from casestore.store import display_url

    log.info("casegate %s milter: config %s, store %s", _version(), cfg.path, display_url(cfg.store))

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        reloading: set[Any] = set()

        async def reload() -> None:  # SIGHUP: the blacklist and supervised addresses, now
            log.info("SIGHUP: re-reading the blacklist and the supervised addresses")
            await server._policy.refresh()
            log.info("SIGHUP: reloaded")

        def on_hup() -> None:
            task = asyncio.ensure_future(reload())
            reloading.add(task)
            task.add_done_callback(reloading.discard)

        loop.add_signal_handler(signal.SIGHUP, on_hup)
        await server.start()
        log.info("milter listening on %s", ", ".join(server.addresses))
        await stop.wait()
        await server.close()

    try:
        asyncio.run(run())
    except OSError as exc:
        raise click.ClickException(f"cannot listen: {exc}") from exc
    finally:
        listener.stop()


# -- blacklist -------------------------------------------------------------------


def valid_pattern(value: str) -> str:
    from rules.blacklist import normalize_pattern

    value = value.strip()
    if value.startswith("@"):
        try:
            validate_email("x" + value, check_deliverability=False, globally_deliverable=False,
                                test_environment=True)
        except EmailNotValidError as exc:
            raise click.BadParameter(f"{value!r} is not a valid @domain: {exc}") from None
    else:
        value = valid_address(value)
    try:
        return normalize_pattern(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def valid_regex(value: str | None) -> str | None:
    import re

    if value is None:
        return None
    try:
        re.compile(value)
    except re.error as exc:
        raise click.BadParameter(f"{value!r} is not a valid regular expression: {exc}") from None
    return value


@main.group()
def blacklist() -> None:
    """Senders rejected during the SMTP session (by the milter)."""


@blacklist.command("add")
@click.argument("pattern")
@click.option("--subject", default=None, help="Only mail whose subject matches this regex.")
@click.option("--reason", default="", help="Why (shown in `blacklist list`).")
@click.pass_obj
def blacklist_add(app: App, pattern: str, subject: str | None, reason: str) -> None:
    """Blacklist PATTERN: an address or @domain."""
    pattern, subject = valid_pattern(pattern), valid_regex(subject)
    with store_errors():
        app.store().add_blacklist(pattern, subject, reason, by="cli")
    click.echo(f"blacklisted {pattern}" + (f" with subject /{subject}/" if subject else "")
               + " (the milter applies it within 5 s)")


@blacklist.command("remove")
@click.argument("pattern")
@click.option("--subject", default=None, help="Remove only the entry with this subject regex.")
@click.pass_obj
def blacklist_remove(app: App, pattern: str, subject: str | None) -> None:
    """Remove PATTERN's entries from the blacklist."""
    pattern = valid_pattern(pattern)
    with store_errors():
        removed = app.store().remove_blacklist(pattern, subject)
    if not removed:
        raise click.ClickException(f"{pattern} is not on the blacklist")
    click.echo(f"removed {removed} entr{'y' if removed == 1 else 'ies'} for {pattern}")


def blacklist_rows(app: App) -> list[dict[str, Any]]:
    with store_errors():
        return [{"pattern": e.pattern, "subject": e.subject, "reason": e.reason,
                 "created": aware(e.created).isoformat(), "created_by": e.created_by}
                for e in app.store().blacklist()]


@blacklist.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_obj
def blacklist_list(app: App, as_json: bool) -> None:
    """List blacklist entries."""
    rows = blacklist_rows(app)
    emit(rows, as_json, "\n".join(
        f"{r['pattern']}\t{('/' + r['subject'] + '/') if r['subject'] else '-'}\t{r['reason']}"
        for r in rows))


@blacklist.command("export")
@click.pass_obj
def blacklist_export(app: App) -> None:
    """Print the blacklist as JSON (for `blacklist import`)."""
    emit([{k: r[k] for k in ("pattern", "subject", "reason")} for r in blacklist_rows(app)],
         True, "")


@blacklist.command("import")
@click.argument("file", type=click.File("r"))
@click.pass_obj
def blacklist_import(app: App, file: Any) -> None:
    """Add entries from FILE: `blacklist export` JSON, or one pattern per line."""
    text = file.read()
    try:
        data = json.loads(text)
        rows = [(str(d["pattern"]), None if d.get("subject") is None else str(d["subject"]),
                 str(d.get("reason", ""))) for d in data]
    except (json.JSONDecodeError, TypeError, KeyError):
        rows = [(line.split("#", 1)[0].strip(), None, "") for line in text.splitlines()]
        rows = [r for r in rows if r[0]]
    checked = []
    for number, (pattern, subject, reason) in enumerate(rows, 1):
        try:
            checked.append((valid_pattern(pattern), valid_regex(subject), reason))
        except click.BadParameter as exc:
            raise click.ClickException(f"entry {number}: {exc.message}; nothing imported") from None
    with store_errors(), _progress(checked, "importing") as entries:
        for pattern, subject, reason in entries:
            app.store().add_blacklist(pattern, subject, reason, by="import")
    click.echo(f"imported {len(checked)} entr{'y' if len(checked) == 1 else 'ies'}")


@main.group()
def approval() -> None:
    """Answers of CSRs who need approval, held for their supervisor."""


@approval.command("list")
@click.option("--all", "all_statuses", is_flag=True, help="Also approved and rejected ones.")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_obj
def approval_list(app: App, all_statuses: bool, as_json: bool) -> None:
    """List held answers."""
    with store_errors():
        rows = [{"id": d.id, "case": d.case.number, "csr": d.csr, "supervisor": d.supervisor,
                 "status": d.status, "commands": d.commands, "text": d.text,
                 "created": aware(d.created).isoformat()}
                for d in app.store().drafts(status=None if all_statuses else "pending")]
    emit(rows, as_json, "\n".join(
        f"{r['id']}\t{r['case']}\t{r['csr']}\t{r['status']}\t{(r['commands'] + ' ' + r['text'])[:60]!r}"
        for r in rows))


def _draft_command(app: App, draft_id: int, name: str, actor: str | None, note: str,
                   as_json: bool) -> None:
    with store_errors():
        draft = app.store().draft(draft_id)
    if draft is None:
        raise click.ClickException(f"no held answer {draft_id} (`casegate approval list`)")
    run_commands(app, draft.case.number, actor, [_given(name, str(draft_id))], note, as_json)


@approval.command("approve")
@click.argument("draft_id", type=int)
@click.option("--csr", "actor", default=None, metavar="ADDRESS", help="The supervisor (default: admin).")
@_json_option
@click.pass_obj
def approval_approve(app: App, draft_id: int, actor: str | None, as_json: bool) -> None:
    """Send a held answer as its author wrote it."""
    _draft_command(app, draft_id, "approve", actor, "", as_json)


@approval.command("reject")
@click.argument("draft_id", type=int)
@click.option("--note", default="", help="Why: goes back to the author.")
@click.option("--csr", "actor", default=None, metavar="ADDRESS", help="The supervisor (default: admin).")
@_json_option
@click.pass_obj
def approval_reject(app: App, draft_id: int, note: str, actor: str | None, as_json: bool) -> None:
    """Return a held answer to its author (nothing goes to the customer)."""
    _draft_command(app, draft_id, "reject", actor, note, as_json)


# -- quarantine and status ---------------------------------------------------------


@main.group("quarantine")
def quarantine_group() -> None:
    """Deliveries whose processing kept failing, held whole (answered 250 to Postfix)."""


def quarantine_row(q: Any) -> dict[str, Any]:
    return {"id": q.id, "status": q.status, "queue_id": q.queue_id, "from": q.mail_from,
            "to": [r for r in q.rcpt_to.split("\n") if r], "attempts": q.attempts,
            "error": q.error, "first_seen": aware(q.first_seen).isoformat(),
            "last_seen": aware(q.last_seen).isoformat()}


@quarantine_group.command("list")
@click.option("--all", "all_statuses", is_flag=True, help="Also failing, released and dropped ones.")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_obj
def quarantine_list(app: App, all_statuses: bool, as_json: bool) -> None:
    """List held deliveries."""
    from casestore import quarantine

    with store_errors():
        rows = [quarantine_row(q) for q in quarantine.held(app.store(), all_statuses=all_statuses)]
    emit(rows, as_json, "\n".join(
        f"{r['id']}\t{r['status']}\t{r['queue_id'] or '-'}\t{r['from'] or '<>'}\t{r['attempts']}\t"
        f"{r['error'].splitlines()[0] if r['error'] else ''}" for r in rows))


def _quarantined(app: App, item_id: int) -> Any:
    from casestore import quarantine

    with store_errors():
        item = quarantine.get(app.store(), item_id)
    if item is None:
        raise click.ClickException(f"nothing in the quarantine with id {item_id}")
    return item


@quarantine_group.command("show")
@click.argument("item_id", type=int)
@click.option("--raw", "raw_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the message's bytes to this file.")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_obj
def quarantine_show(app: App, item_id: int, raw_out: Path | None, as_json: bool) -> None:
    """Show a held delivery: envelope, attempts, the error."""
    item = _quarantined(app, item_id)
    row = {**quarantine_row(item), "size": len(bytes(item.raw))}
    if raw_out is not None:
        try:
            raw_out.write_bytes(bytes(item.raw))
        except OSError as exc:
            raise click.ClickException(f"cannot write {raw_out}: {exc}") from exc
    emit(row, as_json, "\n".join(f"{k}: {v}" for k, v in row.items()))


@quarantine_group.command("retry")
@click.argument("item_id", type=int)
@click.pass_obj
def quarantine_retry(app: App, item_id: int) -> None:
    """Process a held delivery again (after a fix): released when it goes through."""
    from casestore import quarantine
    from smtpd_hook.delivery import Delivery

    item = _quarantined(app, item_id)
    if item.status not in ("held", "failing"):
        raise click.ClickException(f"quarantine {item_id} is {item.status}, not held")
    delivery = Delivery(mail_from=item.mail_from, rcpt_tos=tuple(r for r in item.rcpt_to.split("\n") if r),
                        data=bytes(item.raw), client_addr=item.client_addr, queue_id=item.queue_id)
    with store_errors():
        engine = _engine(app)
        reply = engine.process(delivery)
        again = quarantine.get(app.store(), item_id)
        if reply.code == 250 and again is not None and again.attempts == item.attempts:
            quarantine.set_status(app.store(), item, "released")
            click.echo(f"quarantine {item_id}: processed ({reply})")
            return
    raise click.ClickException(f"quarantine {item_id} failed again: "
                               f"{again.error if again is not None else reply}")


@quarantine_group.command("drop")
@click.argument("item_id", type=int)
@click.pass_obj
def quarantine_drop(app: App, item_id: int) -> None:
    """Give up on a held delivery (it stays in the store, marked dropped)."""
    from casestore import quarantine

    item = _quarantined(app, item_id)
    with store_errors():
        quarantine.set_status(app.store(), item, "dropped")
    click.echo(f"quarantine {item_id}: dropped (kept in the store, not processed)")


@main.command("status")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_obj
def status_cmd(app: App, as_json: bool) -> None:
    """What a monitoring check wants; exit 1 when something needs a person."""
    from casestore import quarantine

    with store_errors():
        store = app.store()
        row = {**store.health(), "quarantine": quarantine.counts(store), **store.attention()}
    problems = []
    if row["cases_unassigned_long"]:
        problems.append(f"{row['cases_unassigned_long']} open case(s) unassigned for more than an hour "
                        "(no available CSR in their pool? `casegate csr list`)")
    if row["quarantine"].get("held"):
        problems.append(f"{row['quarantine']['held']} delivery(ies) held in the quarantine "
                        "(`casegate quarantine list`)")
    if row["outbox_failed"]:
        problems.append(f"{row['outbox_failed']} outgoing message(s) failed for good")
    if row["outbox_oldest_pending_seconds"] and row["outbox_oldest_pending_seconds"] > 600:
        problems.append(f"the oldest unsent message waits for {row['outbox_oldest_pending_seconds']:.0f}s "
                        "(is the re-injection listener up?)")
    if row["timers_overdue"]:
        problems.append(f"{row['timers_overdue']} timer(s) overdue by more than 10 minutes "
                        "(is `casegate serve` running?)")
    row["problems"] = problems
    emit(row, as_json, "\n".join(
        [f"{k}: {v}" for k, v in row.items() if k not in ("problems", "last_errors")]
        + [f"error: {e['when']} {e['what']}: {e['error'].splitlines()[0] if e['error'] else ''}"
           for e in row["last_errors"]]
        + [f"PROBLEM: {p}" for p in problems]))
    if problems:
        sys.exit(1)


# -- shell completion ----------------------------------------------------------------


@main.command("completion")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script for SHELL.

    \b
    bash: casegate completion bash > /etc/bash_completion.d/casegate
          (or: eval "$(casegate completion bash)" in ~/.bashrc)
    zsh:  casegate completion zsh > "${fpath[1]}/_casegate"
          (or: eval "$(casegate completion zsh)" in ~/.zshrc)
    fish: casegate completion fish > ~/.config/fish/completions/casegate.fish"""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    assert cls is not None  # the Choice above lists what click knows
    click.echo(cls(main, {}, "casegate", "_CASEGATE_COMPLETE").source())


# -- check: the Postfix wiring ------------------------------------------------------


@main.command("check")
@click.option("--postfix-config", "postfix_config", default=None,
              type=click.Path(file_okay=False, path_type=Path),
              help="Postfix's configuration directory, as for `postconf -c` (default: the system's).")
@click.option("--listen", default=None, help="The filter's HOST:PORT (default: [serve] listen).")
@click.option("--reinject", default=None, help="The re-injection HOST:PORT (default: [serve] reinject).")
@click.option("--milter", "milter_at", default=None,
              help="casegate's milter HOST:PORT or unix:/path (default: [serve] milter or [milter] "
              "listen; none: not checked).")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_obj
def check_cmd(app: App, postfix_config: Path | None, listen: str | None, reinject: str | None,
              milter_at: str | None, as_json: bool) -> None:
    """Check the live Postfix wiring, the listeners, the store and DKIM.

    One line per check (OK, FAIL or SKIP), each problem with the line to add;
    exit 0 only when nothing fails. Reads `postconf -n/-M/-P` and the transport
    map (`postmap -q` for each supervised address); changes nothing."""
    from smtpd_hook import wiring

    cfg = app.config
    conf = cfg.serve
    listen_at = hostport(listen or str(conf.get("listen", "127.0.0.1:10025")), "--listen")
    reinject_at = hostport(reinject or str(conf.get("reinject", "127.0.0.1:10026")), "--reinject")
    milter = milter_at or conf.get("milter") or cfg.milter.get("listen")
    supervised: tuple[str, ...] = ()
    store_problem: list[str] = []

    def store_check() -> str:
        if store_problem or app._store is None:
            raise StoreError(store_problem[0] if store_problem else "no store")
        return f"{app._store.display_url}: migrated, {len(supervised)} supervised address(es)"

    try:
        with store_errors():
            store = app.store()
            supervised = tuple(m.address for m in store.mailboxes())
    except click.ClickException as exc:
        store_problem.append(exc.message)
    w = wiring.Wiring(supervised=supervised, listen=listen_at, reinject=reinject_at,
                      milter=str(milter) if milter else None, postfix_config=postfix_config,
                      dkim=cfg.dkim)
    checks = wiring.check_all(w, store_check=store_check)
    if store_problem:  # no addresses to route: say so instead of "none supervised"
        checks = [c if c.name != "route" else
                  wiring.Check("route", wiring.SKIP, "the store cannot be read: no addresses to check")
                  for c in checks]
    failed = [c for c in checks if c.status == wiring.FAIL]
    if as_json:
        emit({"ok": not failed, "checks": [c.as_dict() for c in checks]}, True, "")
    else:
        click.echo(wiring.render(checks))
    if failed:
        sys.exit(1)


# -- limits ----------------------------------------------------------------------


@main.group()
def limits() -> None:
    """Rate caps on automatic mail (acknowledgements)."""


@limits.command("show")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_obj
def limits_show(app: App, as_json: bool) -> None:
    """Show the caps."""
    with store_errors():
        rows = app.store().limits()
    emit(rows, as_json, "\n".join(f"{k} = {v}" for k, v in rows.items()))


@limits.command("set")
@click.option("--per-recipient", type=click.IntRange(0), default=None,
              help="Automatic replies to one address per window.")
@click.option("--per-domain", type=click.IntRange(0), default=None,
              help="Automatic replies to one domain per window.")
@click.option("--per-case", type=click.IntRange(0), default=None,
              help="Automatic replies on one case per window.")
@click.option("--window-hours", type=click.IntRange(1), default=None, help="The window.")
@click.pass_obj
def limits_set(app: App, per_recipient: int | None, per_domain: int | None, per_case: int | None,
               window_hours: int | None) -> None:
    """Change the caps (shared by every host on the store)."""
    changes = {"autoreply_per_recipient": per_recipient, "autoreply_per_domain": per_domain,
               "autoreply_per_case": per_case,
               "autoreply_window_hours": window_hours}
    changes = {k: v for k, v in changes.items() if v is not None}
    if not changes:
        raise click.UsageError("nothing to set: give --per-recipient, --per-domain, --per-case "
                               "or --window-hours")
    with store_errors():
        for key, value in changes.items():
            app.store().set_setting(key, str(value))
    click.echo(", ".join(f"{k} = {v}" for k, v in changes.items()))


# -- dkim ------------------------------------------------------------------------


# -- admin objects: show, set, remove (issue 11, the admin's shell) -----------------
# Each object an admin defines can be listed, shown, changed and removed; the
# rules for removing (cases are never lost) are in casestore/admin.py.


def _json_flag(f: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True, help="JSON output.")(f)


@case_group.command("reindex")
@click.pass_obj
def case_reindex(app: App) -> None:
    """Rebuild the search index from the stored cases and messages (when
    `case search` says it is incomplete; safe to run any time)."""
    from casestore.search import reindex

    with store_errors():
        counts = reindex(app.store())
    click.echo(f"search index rebuilt: {counts['cases']} cases, {counts['messages']} messages")


@mailbox.command("show")
@click.argument("address")
@_json_flag
@click.pass_obj
def mailbox_show(app: App, address: str, as_json: bool) -> None:
    """Show a supervised address: its pool, name and how many cases it has."""
    from casestore.admin import mailbox_info

    with store_errors():
        store = app.store()
        row = mailbox_info(store, address.lower())
        shown = {**row, **mailbox_templates(store.mailbox(row["address"]))}
    emit(row, as_json, "\n".join(f"{k}: {v}" for k, v in shown.items()))


@mailbox.command("remove")
@click.argument("address")
@click.option("--move-cases-to", default=None, metavar="ADDRESS",
              help="Move its cases to this supervised address first (needed when it has cases).")
@click.pass_obj
def mailbox_remove(app: App, address: str, move_cases_to: str | None) -> None:
    """Stop supervising ADDRESS. A mailbox with cases keeps them: refused
    unless --move-cases-to names another supervised address for them. Remove
    it from Postfix's maps too."""
    from casestore.admin import remove_mailbox

    with store_errors():
        moved = remove_mailbox(app.store(), address.lower(),
                               move_cases_to=move_cases_to.lower() if move_cases_to else None)
    click.echo(f"{address.lower()} is no longer supervised"
               + (f"; its {moved} case(s) moved to {move_cases_to}" if moved else "")
               + "; remove it from casegate_transport and casegate_recipients (then postmap)")


@pool.command("show")
@click.argument("name")
@_json_flag
@click.pass_obj
def pool_show(app: App, name: str, as_json: bool) -> None:
    """Show a pool: its policies, mailboxes, members, questions and open cases."""
    from casestore.admin import get_pool, pool_info

    with store_errors():
        store = app.store()
        with store.guard():
            row = pool_row(get_pool(name))
        row.update(pool_info(store, name))
    if as_json:
        emit(row, True, "")
        return
    lines = [f"{k}: {v}" for k, v in row.items() if k not in ("members", "mailboxes", "questions")]
    lines.append(f"mailboxes: {', '.join(row['mailboxes']) or '-'}")
    lines.append(f"questions: {', '.join(row['questions']) or '-'}")
    lines.append("members:" + ("" if row["members"] else " -"))
    lines += [f"  {m['address']}\t{m['name']}\tlevel {m['level']}\tpriority {m['priority']}"
              + ("\taway" if m["away"] else "") for m in row["members"]]
    click.echo("\n".join(lines))


@pool.command("remove")
@click.argument("name")
@click.pass_obj
def pool_remove(app: App, name: str) -> None:
    """Remove a pool no mailbox uses (its memberships and questions go with it)."""
    from casestore.admin import remove_pool

    with store_errors():
        remove_pool(app.store(), name)
    click.echo(f"pool {name} removed")


def _csr_rows(app: App, address: str) -> dict[str, Any]:
    from casestore.admin import csr_cases, get_csr

    store = app.store()
    with store.guard():
        c = get_csr(address)
        row = {"address": c.address, "name": c.name, "available": c.available,
               "pools": store.csr_pools(c), "memberships": store.memberships(c),
               "signature": c.signature, "supervisor": c.supervisor if c.needs_approval else None,
               "created": aware(c.created).isoformat()}
    row.update(csr_cases(store, address))
    return row


@csr.command("show")
@click.argument("address")
@_json_flag
@click.pass_obj
def csr_show(app: App, address: str, as_json: bool) -> None:
    """Show a CSR: name, pools with level, priority and absence, signature, cases."""
    with store_errors():
        row = _csr_rows(app, address.lower())
    if as_json:
        emit(row, True, "")
        return
    lines = [f"{k}: {v}" for k, v in row.items() if k not in ("memberships", "signature", "pools")]
    lines += [f"pool {m['pool']}: level {m['level']}, priority {m['priority']}"
              + (f", away until {m['away_until'] or 'further notice'}" if m["away"] else "")
              for m in row["memberships"]]
    lines += ["signature:"] + ["  " + s for s in (row["signature"] or "-").splitlines()]
    click.echo("\n".join(lines))


@csr.command("remove")
@click.argument("address")
@click.option("--reassign-to", default=None, metavar="ADDRESS",
              help="Give the CSR's open cases to this CSR (default: by each pool's assignment rule).")
@_json_flag
@click.pass_obj
def csr_remove(app: App, address: str, reassign_to: str | None, as_json: bool) -> None:
    """Remove a CSR. Their open cases go first to --reassign-to, or back to
    their pools, whose assignment rule hands them out at once (a case that
    finds nobody waits unassigned and is retried, as a new one would). Closed
    cases keep their history; their mail no longer counts as a CSR's."""
    from casestore.admin import get_csr, open_cases_of, release_cases, remove_csr
    from rules.commands import Given

    address = address.lower()
    with store_errors():
        store = app.store()
        cases = open_cases_of(store, address)
        handed: dict[str, str | None] = {}
        if reassign_to is not None:
            target = valid_address(reassign_to)
            if target == address:
                raise click.BadParameter("a CSR cannot hand their cases to themselves",
                                         param_hint="--reassign-to")
            with store.guard():
                get_csr(target)
            engine = _engine(app) if cases else None
            failed = []
            for number in cases:
                result = engine.command(number, actor=None, commands=[Given("assign", target)], text="")
                if not result.ok:
                    failed.append(f"{number}: {'; '.join(result.errors)}")
                handed[number] = target if result.ok else None
            if failed:
                raise click.ClickException(f"{address} is kept: these cases could not go to {target}: "
                                           + ", ".join(failed))
        elif cases:
            released = release_cases(store, address)
            engine = _engine(app)
            while engine.run_due_timers(f"cli-csr-remove:{os.getpid()}"):
                pass
            for number in released:
                case = store.case(number)
                handed[number] = case.assignee.address if case is not None and case.assignee_id else None
        remove_csr(store, address)
    row = {"address": address, "cases": handed}
    emit(row, as_json, f"CSR {address} removed" + "".join(
        f"\n  {n} -> {who or 'unassigned (waits for a CSR; retried)'}" for n, who in handed.items()))


@department.command("show")
@click.argument("name")
@_json_flag
@click.pass_obj
def department_show(app: App, name: str, as_json: bool) -> None:
    """Show a department and its consultations by status."""
    from peewee import fn

    from casestore.models import Consultation, Department

    with store_errors():
        store = app.store()
        with store.guard():
            d = Department.get_or_none(Department.name == name)
            if d is None:
                raise click.ClickException(f"no department named {name!r}; "
                                           "`casegate department list` shows them")
            row = department_row(d)
            row["consultations"] = dict(Consultation.select(Consultation.status, fn.COUNT(Consultation.id))
                                        .where(Consultation.department == d.id)
                                        .group_by(Consultation.status).tuples())
    emit(row, as_json, "\n".join(f"{k}: {v}" for k, v in row.items()))


@question.command("show")
@click.argument("pool_name", metavar="POOL")
@click.argument("name")
@_json_flag
@click.pass_obj
def question_show(app: App, pool_name: str, name: str, as_json: bool) -> None:
    """Show a closing question."""
    from casestore.admin import get_question, question_row

    with store_errors():
        with app.store().guard():
            row = question_row(get_question(pool_name, name))
    emit(row, as_json, "\n".join(f"{k}: {v}" for k, v in row.items()))


@question.command("set")
@click.argument("pool_name", metavar="POOL")
@click.argument("name")
@click.option("--choices", default=None, help='The allowed answers, comma-separated ("" for any).')
@click.option("--required/--no-required", default=None, help="A case does not close without an answer.")
@click.option("--free-text/--no-free-text", default=None, help="Answers outside the choices are fine too.")
@click.pass_obj
def question_set(app: App, pool_name: str, name: str, choices: str | None, required: bool | None,
                 free_text: bool | None) -> None:
    """Change a closing question (answers already given stay on their cases)."""
    from casestore.admin import question_row, set_question

    changes: dict[str, Any] = {}
    if choices is not None:
        changes["choices"] = ",".join(c.strip() for c in choices.split(",") if c.strip())
    if required is not None:
        changes["required"] = required
    if free_text is not None:
        changes["free_text"] = free_text
    if not changes:
        raise click.UsageError("nothing to set: give --choices, --required/--no-required "
                               "or --free-text/--no-free-text")
    with store_errors():
        row = question_row(set_question(app.store(), pool_name, name, **changes))
    if not row["choices"] and not row["free_text"]:
        click.echo(f"note: question {name} has no choices and no free text: any answer is taken", err=True)
    click.echo(f"pool {pool_name}: #close {name}={'|'.join(row['choices']) or '...'}"
               + (" (required)" if row["required"] else ""))


@blacklist.command("show")
@click.argument("pattern")
@_json_flag
@click.pass_obj
def blacklist_show(app: App, pattern: str, as_json: bool) -> None:
    """Show the entries for an address or @domain (with their subject patterns)."""
    with store_errors():
        from casestore.admin import blacklist_entries

        rows = [{"pattern": e.pattern, "subject": e.subject, "reason": e.reason,
                 "created": aware(e.created).isoformat(), "created_by": e.created_by}
                for e in blacklist_entries(app.store(), pattern.lower())]
    if not rows:
        raise click.ClickException(f"{pattern} is not on the blacklist; `casegate blacklist list` shows it")
    emit(rows, as_json, "\n".join(f"{k}: {v}" for r in rows for k, v in r.items()))


@limits.command("remove")
@click.argument("names", nargs=-1, metavar="[per-recipient|per-domain|per-case|window-hours]...")
@click.option("--all", "all_limits", is_flag=True, help="Every cap back to its default.")
@click.pass_obj
def limits_remove(app: App, names: tuple[str, ...], all_limits: bool) -> None:
    """Put caps back to their defaults (the values set with `limits set` are removed)."""
    from casestore.admin import LIMIT_OPTIONS, reset_limits

    unknown = [n for n in names if n.lstrip("-") not in LIMIT_OPTIONS]
    if unknown:
        raise click.BadParameter(f"unknown cap {unknown[0]!r}: use {', '.join(LIMIT_OPTIONS)} or --all")
    keys = list(LIMIT_OPTIONS.values()) if all_limits else [LIMIT_OPTIONS[n.lstrip("-")] for n in names]
    if not keys:
        raise click.UsageError(f"name the caps to reset ({', '.join(LIMIT_OPTIONS)}) or give --all")
    with store_errors():
        back = reset_limits(app.store(), keys)
    click.echo(", ".join(f"{k} = {v} (default)" for k, v in back.items()))


@main.group("dkim")
def dkim_group() -> None:
    """DKIM keys for signing outgoing mail."""


@dkim_group.command("keygen")
@click.option("--domain", required=True, help="The signing domain (d=), e.g. example.com.")
@click.option("--selector", default="casegate", show_default=True)
@click.option("--key", "key_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the private key (never overwritten).")
@click.option("--bits", type=click.IntRange(1024, 4096), default=2048, show_default=True)
def dkim_keygen(domain: str, selector: str, key_path: Path, bits: int) -> None:
    """Make a key and print the DNS TXT record to publish."""
    from smtpd_hook import dkim

    try:
        record = dkim.keygen(domain, selector, key_path, bits=bits)
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(record)
    click.echo(f"\n# then in the config's [dkim]: domain = \"{domain}\", selector = \"{selector}\","
               f" key = \"{key_path}\"", err=True)


@dkim_group.command("record")
@click.option("--domain", required=True)
@click.option("--selector", default="casegate", show_default=True)
@click.option("--key", "key_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True)
def dkim_record(domain: str, selector: str, key_path: Path) -> None:
    """Print the DNS TXT record of an existing key."""
    from smtpd_hook import dkim

    try:
        click.echo(dkim.public_key_record(key_path, domain=domain, selector=selector))
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc


# -- templates (issue 10): pool settings, CSR footers, `casegate template` ------------

TEMPLATE_LANGUAGES = ("en", "pl")
FOOTER_IMAGE_TYPES = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG\r\n\x1a\n": "image/png",
                      b"GIF87a": "image/gif", b"GIF89a": "image/gif"}
FOOTER_MAX_BYTES = 512 * 1024


def _template_pool_changes(language: str | None, acknowledge: bool | None, greeting: str | None,
                           text_only: bool | None) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if language is not None:
        if language.lower() not in TEMPLATE_LANGUAGES:
            raise click.BadParameter(f"{language!r}: the built-in templates speak "
                                     f"{', '.join(TEMPLATE_LANGUAGES)}", param_hint="--language")
        changes["language"] = language.lower()
    if acknowledge is not None:
        changes["acknowledge"] = acknowledge
    if greeting is not None:
        text = " ".join(greeting.split())
        if len(text) > 200 or any(ord(c) < 32 for c in greeting if c not in "\t\n"):
            raise click.BadParameter("one line of at most 200 characters", param_hint="--greeting")
        rest = text.replace("{first_name}", "").replace("{first name}", "").replace("{name}", "")
        if "{" in rest or "}" in rest:
            raise click.BadParameter("only {first_name} and {name} may be in braces",
                                     param_hint="--greeting")
        changes["greeting"] = text
    if text_only is not None:
        changes["text_only"] = text_only
    return changes


def _footer_changes(footer_file: str | None, footer_image: str | None) -> dict[str, Any]:
    """The footer's HTML and picture, read and checked here (a wrong file is
    an error before anything is stored)."""
    changes: dict[str, Any] = {}
    if footer_file is not None:
        if footer_file == "":
            changes["footer_html"] = ""
        else:
            try:
                html = Path(footer_file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise click.BadParameter(f"cannot read {footer_file}: {exc}",
                                         param_hint="--footer-file") from None
            from smtpd_hook.sanitize import sanitize

            if not sanitize(html).strip():
                raise click.BadParameter(f"{footer_file}: nothing is left of it after sanitising",
                                         param_hint="--footer-file")
            changes["footer_html"] = html
    if footer_image is not None:
        if footer_image == "":
            changes.update(footer_image=None, footer_image_type="", footer_image_name="")
        else:
            try:
                data = Path(footer_image).read_bytes()
            except OSError as exc:
                raise click.BadParameter(f"cannot read {footer_image}: {exc}",
                                         param_hint="--footer-image") from None
            kind = next((t for magic, t in FOOTER_IMAGE_TYPES.items() if data.startswith(magic)), None)
            if kind is None:
                raise click.BadParameter(f"{footer_image}: not a JPEG, PNG or GIF",
                                         param_hint="--footer-image")
            if len(data) > FOOTER_MAX_BYTES:
                raise click.BadParameter(f"{footer_image}: {len(data)} bytes, at most "
                                         f"{FOOTER_MAX_BYTES} (it goes with every answer)",
                                         param_hint="--footer-image")
            changes.update(footer_image=data, footer_image_type=kind,
                           footer_image_name=Path(footer_image).name[:200])
    return changes


def template_problems(cfg: Config) -> list[str]:
    """Every broken override under templates_dir, as ``file:line: message``."""
    from smtpd_hook.render import LANGUAGES, Renderer
    from smtpd_hook.samples import sample

    if cfg.templates_dir is None:
        return []
    if not cfg.templates_dir.is_dir():
        return [f"{cfg.templates_dir}: templates_dir (in {cfg.path}) is not a folder"]
    renderer = Renderer(cfg.templates_dir)
    problems: dict[str, None] = {}
    for language in LANGUAGES:  # an override serves pools of either language
        for p in renderer.check(lambda audience, name, lang=language: sample(audience, name, lang)):
            problems.setdefault(str(p))
    return list(problems)


def _template_name(renderer: Any, name: str) -> tuple[str, str]:
    known = renderer.builtin_names()
    audience, _, short = name.rpartition("/")
    short = short.removesuffix(".j2").removesuffix(".txt").removesuffix(".html")
    found = [(a, n) for a, n in known if n == short and (not audience or a == audience)]
    if not found:
        raise click.BadParameter(f"{name!r}: no such template (`casegate template list`)",
                                 param_hint="NAME")
    return found[0]


@main.group("template")
def template_group() -> None:
    """The mail casegate writes: templates, overrides, checks (docs/templates.md)."""


@template_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
@click.pass_obj
def template_list(app: App, as_json: bool) -> None:
    """Every template, its languages, and the overrides in templates_dir."""
    from smtpd_hook.render import LANGUAGES, Renderer

    renderer = Renderer(app.config.templates_dir)
    rows = []
    for audience, name in renderer.builtin_names():
        langs = [lang for lang in LANGUAGES
                 if renderer._first(renderer.candidates(audience, name, "txt", language=lang))[1]
                 is not None and (lang == "en" or renderer._first(
                     [f"builtin/{lang}/{audience}/{name}.txt.j2"])[1] is not None)]
        overrides = [str(p) for p in renderer.overrides()
                     if p.parts[-2:-1] == (audience,) and p.name.startswith(name + ".")]
        rows.append({"name": f"{audience}/{name}", "languages": langs, "overrides": overrides})
    emit(rows, as_json, "\n".join(
        f"{r['name']}\t{','.join(r['languages'])}\t"
        + (" ".join(r["overrides"]) if r["overrides"] else "(built-in)") for r in rows))


@template_group.command("show")
@click.argument("name")
@click.option("--pool", "pool_name", default="", help="As this pool would get it.")
@click.option("--mailbox", default="", metavar="ADDRESS", help="As this supervised address would get it.")
@click.option("--language", default=None, help="en or pl (default: the mailbox's, else the pool's, else en).")
@click.option("--html", "as_html", is_flag=True, help="The HTML template (default: the text one).")
@click.pass_obj
def template_show(app: App, name: str, pool_name: str, mailbox: str, language: str | None,
                  as_html: bool) -> None:
    """Print the template that would be used, and where it comes from."""
    from smtpd_hook.render import Renderer

    renderer = Renderer(app.config.templates_dir)
    audience, short = _template_name(renderer, name)
    language = language or _pool_language(app, pool_name, mailbox)
    names = renderer.candidates(audience, short, "html" if as_html else "txt", pool=pool_name,
                                mailbox=mailbox, language=language)
    index, template = renderer._first(names)
    if template is None:
        raise click.ClickException(f"no template for {audience}/{short}")
    click.echo(f"# {names[index]}", err=True)
    click.echo(renderer.source(names[index]), nl=False)


def _pool_language(app: App, pool_name: str, mailbox: str = "") -> str:
    """The language of a mailbox (its own, else its pool's) or of a pool."""
    if not (pool_name or mailbox) or not app.config.exists:
        return "en"
    with store_errors():
        from casestore.models import Mailbox, Pool

        app.store()
        box = Mailbox.get_or_none(Mailbox.address == mailbox.lower()) if mailbox else None
        if box is not None and box.language:
            return box.language
        row = Pool.get_or_none(Pool.name == pool_name) if pool_name else (
            box.pool if box is not None else None)
    return (row.language or "en") if row is not None else "en"


@template_group.command("check")
@click.pass_obj
def template_check(app: App) -> None:
    """Compile every override and render it against a sample case; exit 1
    naming file:line of each problem."""
    problems = template_problems(app.config)
    if problems:
        for p in problems:
            click.echo(p, err=True)
        raise SystemExit(1)
    where = app.config.templates_dir
    count = 0
    if where is not None:
        from smtpd_hook.render import Renderer

        count = len(Renderer(where).overrides())
    click.echo(f"{count} override(s) in {where} render fine" if where else
               "no templates_dir configured: the built-in templates are used")


@template_group.command("render")
@click.argument("name")
@click.option("--pool", "pool_name", default="", help="As this pool would get it.")
@click.option("--mailbox", default="", metavar="ADDRESS", help="As this supervised address would get it.")
@click.option("--case", "number", default=None, help="With this case's data (customer templates).")
@click.option("--language", default=None, help="en or pl (default: the mailbox's, else the pool's, else en).")
@click.option("--html", "as_html", is_flag=True, help="Print the HTML part (default: the text).")
@click.pass_obj
def template_render(app: App, name: str, pool_name: str, mailbox: str, number: str | None,
                    language: str | None, as_html: bool) -> None:
    """Render a template against a sample case, or a real one with --case."""
    from smtpd_hook.render import Renderer
    from smtpd_hook.samples import sample

    renderer = Renderer(app.config.templates_dir)
    audience, short = _template_name(renderer, name)
    context = sample(audience, short, language or "en")
    if number is not None:
        if audience != "customer":
            raise click.BadParameter("--case fills customer templates only", param_hint="--case")
        context, mailbox, pool_name, case_language = _case_context(app, number, short, context)
        language = language or case_language
    language = language or _pool_language(app, pool_name, mailbox)
    if number is None:
        context = sample(audience, short, language)
    rendered = renderer.render(audience, short, context, pool=pool_name, mailbox=mailbox,
                               language=language, html=True)
    click.echo("# " + ", ".join(rendered.sources), err=True)
    click.echo((rendered.html or "") if as_html else rendered.text, nl=False)


def _case_context(app: App, number: str, name: str,
                  context: dict[str, Any]) -> tuple[dict[str, Any], str, str, str]:
    """A real case's variables over the sample (a CSR's answer stays the sample's)."""
    from casestore.models import Case
    from smtpd_hook.executor import Context

    engine = _engine(app)
    store = engine.store
    with store_errors():
        case = store.load_case(Case.number == number.strip().upper())
        if case is None:
            raise click.ClickException(f"no case {number}")
        directory, _ = store.load_directory()
        ctx = Context(mailbox=case.mailbox, directory=directory, case=case)
        ex = engine.executor
        real = {**ex._customer_context(case, ctx), **ex._thread_context(case, ctx)}
    pool = case.mailbox.pool
    return ({**context, **real, "links": context["links"]}, case.mailbox.address, pool.name,
            case.mailbox.language or pool.language or "en")


# -- report ---------------------------------------------------------------------------------


@main.command("report")
@click.option("--from", "first", default=None, metavar="DATE",
              help="First day of the period, YYYY-MM-DD (UTC); default 29 days before --to.")
@click.option("--to", "last", default=None, metavar="DATE",
              help="Last day of the period, included, YYYY-MM-DD (UTC); default today.")
@click.option("--pool", "pool_name", default=None, metavar="NAME", help="Only the cases of this pool.")
@click.option("--by", type=click.Choice(["csr", "pool", "day", "product"]), default="csr",
              show_default=True, help="The breakdown shown in table, CSV and HTML (JSON has them all).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "html"]), default="table",
              show_default=True)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file instead of standard output.")
@click.pass_obj
def report(app: App, first: str | None, last: str | None, pool_name: str | None, by: str, fmt: str,
           output: Path | None) -> None:
    """How the service centre and each CSR perform over a period (docs/reports.md)."""
    from casestore import report_formats, reports

    try:
        first_day = reports.parse_day(first) if first else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--from") from None
    try:
        last_day = reports.parse_day(last) if last else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--to") from None
    store = app.store()
    try:
        period = reports.default_period(store.clock().date(), first_day, last_day)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--from/--to") from None
    if by == "product" and reports.product_column(store) is None:
        raise click.BadParameter("this store has no products (no product column on cases)",
                                 param_hint="--by")
    with store_errors():
        if sys.stderr.isatty():
            with click.progressbar(length=len(reports.Report.STEPS), label="report",
                                   file=sys.stderr) as bar:
                data = reports.build(store, period, pool=pool_name, progress=lambda step: bar.update(1))
        else:
            data = reports.build(store, period, pool=pool_name)
    text = report_formats.render(data, fmt, by)
    if output is None:
        click.echo(text, nl=False)
        return
    tmp = output.with_name(f".{output.name}.{os.getpid()}.part")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, output)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise click.ClickException(f"cannot write {output}: {exc.strerror or exc}") from exc
    click.echo(f"wrote {output} ({fmt}, {period.first} to {period.last})", err=True)


if __name__ == "__main__":  # pragma: no cover
    main()
