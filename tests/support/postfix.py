"""A private Postfix for system tests and benchmarks, built from the very
snippets in contrib/postfix/ that a sysadmin copies.

The instance lives in one folder (``root``) and listens on loopback ports of
the caller's choosing, beside any system Postfix; recipe and pitfalls in
/work/shared/notes/postfix-test-instance.md. Needs root and the postfix
package (plus sasl2-bin and libsasl2-modules for SASL, openssl for TLS).

    with Sink() as sink, PostfixInstance(root=tmp, sink_port=sink.port) as pf:
        pf.send("customer@outside.test", ["support@example.com"], msg)

What comes from where:

* ``$root/etc/main.cf`` = a minimal private base (paths, loopback, all other
  mail to the sink) + contrib/postfix/main.cf + test-only overrides (fast
  retries) + ``extra_main``.
* ``$root/etc/master.cf`` = the base services (chroot ``n`` everywhere,
  postlog) + the public smtpd on ``smtpd_port`` + contrib/postfix/master.cf.
* ``$root/etc/casegate_transport`` = contrib/postfix/casegate_transport with
  one line per ``supervised`` address, plus ``<domain> smtp:[127.0.0.1]:SINK``
  for each supervised domain (the staff mailboxes).

The contrib files name the sysadmin defaults (filter 10025, re-injection
10026, milter 10027, /etc/postfix paths). :data:`SUBSTITUTIONS` lists every
string the harness replaces; a string missing from its file raises
:class:`ContribDrift`, so the files and the harness cannot drift apart.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import time
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from pathlib import Path
from types import MappingProxyType

REPO = Path(__file__).resolve().parents[2]
CONTRIB = REPO / "contrib" / "postfix"

# --- the strings of contrib/postfix/* that the harness replaces ------------
#: casegate_transport: the next hop of every supervised address (filter port).
FILTER_NEXTHOP = "casegate:[127.0.0.1]:10025"
#: main.cf: where the transport map lives.
TRANSPORT_MAP = "hash:/etc/postfix/casegate_transport"
#: main.cf: the milter line, commented out until the milter runs (its start:
#: the per-milter settings that follow are kept).
MILTER_LINE = "#smtpd_milters = { inet:127.0.0.1:10027,"
#: main.cf: the recipient gate's lines, commented out until the milter runs.
GATE_LINES = (
    "#smtpd_restriction_classes = casegate_gate",
    "#casegate_gate = check_policy_service { inet:127.0.0.1:10027,",
    "#smtpd_recipient_restrictions = check_recipient_access hash:/etc/postfix/casegate_recipients",
)
#: main.cf: where the gate's map lives.
GATE_MAP = "hash:/etc/postfix/casegate_recipients"
#: main.cf: the header checks that drop the milter's stamp from every copy an
#: smtp or lmtp client delivers (contrib/postfix/casegate_header_checks) ...
HEADER_CHECKS = "regexp:/etc/postfix/casegate_header_checks"
#: ... and master.cf: the casegate transport turns them off (the filter needs it).
NO_HEADER_CHECKS = "  -o smtp_header_checks=\n"
#: master.cf: the re-injection listener's address.
REINJECT_LISTENER = "127.0.0.1:10026 inet"
#: master.cf: first line of the commented submission block; the block goes on
#: with the lines that start with SUBMISSION_OPTION.
SUBMISSION_LINE = "#submission inet n       -       n       -       -       smtpd"
SUBMISSION_OPTION = "#  -o "

SUBSTITUTIONS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "casegate_transport": (FILTER_NEXTHOP,),
        "main.cf": (TRANSPORT_MAP, HEADER_CHECKS, MILTER_LINE, *GATE_LINES),
        "casegate_recipients": ("casegate_gate",),
        "casegate_header_checks": ("/^X-Casegate-Auth:/",),
        "master.cf": (REINJECT_LISTENER, SUBMISSION_LINE, NO_HEADER_CHECKS),
    }
)

#: Test-only settings written after the contrib snippet: deferred mail is
#: retried within seconds instead of minutes (Postfix: 300s/4000s/300s).
FAST_RETRY = MappingProxyType(
    {
        "queue_run_delay": "2s",
        "minimal_backoff_time": "2s",
        "maximal_backoff_time": "4s",
    }
)

_QUEUED_AS = re.compile(r"queued as ([0-9A-Za-z]+)")
# Longest unix socket the instance creates, under $root: AF_UNIX paths are
# limited to 107 bytes.
_LONGEST_SOCKET = "/spool/private/proxywrite"


class PostfixError(RuntimeError):
    """A Postfix command failed; the message carries its output and the log."""


class ContribDrift(RuntimeError):
    """A string the harness substitutes is missing from a contrib file."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind to 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_ports(count: int, host: str = "127.0.0.1", exclude: Sequence[int] = ()) -> list[int]:
    """``count`` distinct free ports, none in ``exclude``. All sockets stay
    bound until all are picked: calling free_port() repeatedly can return the
    port it just released."""
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(s)
            s.bind((host, 0))
            port = int(s.getsockname()[1])
            if port not in exclude:
                ports.append(port)
    finally:
        for s in held:
            s.close()
    return ports


def _port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def postfix_missing() -> str | None:
    """Why a private Postfix cannot run here, or None when it can."""
    if shutil.which("postfix") is None and not Path("/usr/sbin/postfix").exists():
        return "postfix is not installed (apt-get install postfix)"
    if os.geteuid() != 0:
        return "a private Postfix instance needs root"
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return "there is no 'postfix' user"
    return None


def sasl_missing() -> str | None:
    """Why Cyrus SASL with sasldb cannot be used here, or None when it can."""
    if shutil.which("saslpasswd2") is None:
        return "saslpasswd2 is not installed (apt-get install sasl2-bin)"
    if not list(Path("/usr/lib").glob("**/sasl2/libsasldb.so*")):
        return "the sasldb plugin is not installed (apt-get install libsasl2-modules)"
    if shutil.which("openssl") is None:
        return "openssl is not installed (needed for the submission listener's TLS)"
    return None


def require(text: str, needles: Sequence[str], source: str) -> str:
    """Return ``text`` if it contains every one of ``needles``, else raise
    :class:`ContribDrift` naming the file (relative to contrib/postfix)."""
    for needle in needles:
        if needle not in text:
            raise ContribDrift(
                f"contrib/postfix/{source}: the harness expects {needle!r} in this file "
                "(tests/support/postfix.py SUBSTITUTIONS); update one to match the other"
            )
    return text


def substitute(text: str, replacements: Mapping[str, str], source: str) -> str:
    """Replace each key of ``replacements`` (every occurrence) in ``text``;
    raise :class:`ContribDrift` when a key does not occur at all."""
    require(text, list(replacements), source)
    for old, new in replacements.items():
        text = text.replace(old, new)
    return text


def contrib_transport_entries(text: str) -> list[tuple[str, str]]:
    """The (address, next hop) entries of a transport map text."""
    entries = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, value = line.split(None, 1)
            entries.append((key, value.strip()))
    return entries


def send_message(
    host: str,
    port: int,
    mail_from: str,
    rcpt_tos: Sequence[str],
    message: EmailMessage | bytes,
    *,
    source_address: tuple[str, int] | None = ("127.0.0.2", 0),
    login: tuple[str, str] | None = None,
    starttls: bool = False,
    timeout: float = 30.0,
) -> str:
    """Submit one message over SMTP; return the queue ID of the ``250`` reply.

    ``source_address`` 127.0.0.2 is "the internet" (outside mynetworks);
    ``login`` (user, password) authenticates, after STARTTLS when ``starttls``.
    SMTP errors propagate as smtplib exceptions.
    """
    data = message.as_bytes() if isinstance(message, EmailMessage) else message
    with smtplib.SMTP(
        host, port, local_hostname="client.test", source_address=source_address, timeout=timeout
    ) as smtp:
        smtp.ehlo()
        if starttls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE  # the test instance's self-signed certificate
            smtp.starttls(context=ctx)
            smtp.ehlo()
        if login is not None:
            smtp.login(*login)
        code, resp = smtp.mail(mail_from)
        if code != 250:
            raise smtplib.SMTPSenderRefused(code, resp, mail_from)
        for rcpt in rcpt_tos:
            code, resp = smtp.rcpt(rcpt)
            if code not in (250, 251):
                raise smtplib.SMTPRecipientsRefused({rcpt: (code, resp)})
        code, resp = smtp.data(data)
    text = resp.decode(errors="replace")
    m = _QUEUED_AS.search(text)
    if not m:
        raise PostfixError(f"no queue ID in the DATA reply: {code} {text}")
    return m.group(1)


class PostfixInstance:
    """A private Postfix in ``root`` (see the module docstring).

    Ports default to free ones; ``sink_port`` is where every message not for
    the filter goes. ``supervised`` defaults to the addresses listed in
    contrib/postfix/casegate_transport. ``milter`` (e.g. ``inet:127.0.0.1:PORT``)
    enables contrib's smtpd_milters line: the milter then runs in every smtpd
    but the re-injection listener. ``submission_port`` enables contrib's
    submission block (SASL, STARTTLS with a self-signed certificate made here);
    ``sasl_users`` maps ``user@realm`` to a password in the instance's sasldb.
    ``extra_main`` comes last in main.cf and so overrides anything before it.
    """

    def __init__(
        self,
        *,
        root: Path,
        sink_port: int,
        smtpd_port: int | None = None,
        filter_port: int | None = None,
        reinject_port: int | None = None,
        supervised: Sequence[str] | None = None,
        milter: str | None = None,
        submission_port: int | None = None,
        sasl_users: Mapping[str, str] | None = None,
        extra_main: Mapping[str, str] | None = None,
    ) -> None:
        self.root = Path(root).resolve()
        given = [
            p for p in (sink_port, smtpd_port, filter_port, reinject_port, submission_port) if p
        ]
        if len(set(given)) != len(given):
            raise ValueError(f"ports must differ: {given}")
        spare = iter(free_ports(3, exclude=given))
        self.sink_port = sink_port
        self.smtpd_port = smtpd_port or next(spare)
        self.filter_port = filter_port or next(spare)
        self.reinject_port = reinject_port or next(spare)
        self.milter = milter
        self.submission_port = submission_port
        self.sasl_users = dict(sasl_users or {})
        self.extra_main = dict(extra_main or {})
        transport_text = (CONTRIB / "casegate_transport").read_text()
        self.supervised = tuple(
            supervised
            if supervised is not None
            else (addr for addr, _ in contrib_transport_entries(transport_text))
        )
        self.etc = self.root / "etc"
        self.spool = self.root / "spool"
        self.data = self.root / "data"
        self.maillog_path = self.root / "maillog"
        self.sasldb = self.root / "sasldb2"
        self._built = False
        self._running = False

    # --- configuration ------------------------------------------------------
    @property
    def domains(self) -> tuple[str, ...]:
        """The supervised domains (relay_domains; staff mailboxes go to the sink)."""
        seen: dict[str, None] = {}
        for addr in self.supervised:
            seen[addr.rpartition("@")[2].lower()] = None
        return tuple(seen)

    @property
    def sink_nexthop(self) -> str:
        return f"smtp:[127.0.0.1]:{self.sink_port}"

    def _check_root(self) -> None:
        postfix_uid = pwd.getpwnam("postfix").pw_uid
        for parent in self.root.parents:
            st = parent.stat()
            if not (st.st_mode & 0o001 or st.st_uid == postfix_uid):
                raise PostfixError(
                    f"{parent} is not traversable by user postfix (mode "
                    f"{st.st_mode & 0o777:o}); put the instance under a folder made "
                    "with tempfile.mkdtemp() (the postfix_root fixture does)"
                )
        if len(str(self.root) + _LONGEST_SOCKET) > 100:
            raise PostfixError(f"{self.root} is too long for Postfix's unix sockets")

    def build(self) -> None:
        """Write etc/, the queue folders, the maps and (on request) sasldb and TLS."""
        self._check_root()
        for d in (self.root, self.etc, self.spool, self.data):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o755)
        shutil.chown(self.data, user="postfix")
        if self.submission_port is not None:
            self._make_tls()
            self._make_sasl_conf()
            for login, password in self.sasl_users.items():
                self.add_sasl_user(login, password)
        (self.etc / "main.cf").write_text(self.main_cf())
        (self.etc / "master.cf").write_text(self.master_cf())
        (self.etc / "casegate_transport").write_text(self.transport_map())
        (self.etc / "casegate_recipients").write_text(self.recipients_map())
        (self.etc / "casegate_header_checks").write_text(self.header_checks())
        self._age_config()
        for name in ("casegate_transport", "casegate_recipients"):
            self._run(["postmap", "-c", str(self.etc), f"hash:{self.etc / name}"])
        self._built = True

    def main_cf(self) -> str:
        r = self.root
        base = {
            "compatibility_level": "3.6",
            "config_directory": f"{self.etc}",
            "queue_directory": f"{self.spool}",
            "data_directory": f"{self.data}",
            "maillog_file": f"{self.maillog_path}",
            "maillog_file_prefixes": f"{r}",
            "myhostname": "mx.test.example",
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            # 127.0.0.1 is the inside (a CSR's trusted host), 127.0.0.2 the internet.
            "mynetworks": "127.0.0.1/32",
            "relay_domains": ", ".join(self.domains),
            "smtpd_relay_restrictions": (
                "permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination"
            ),
            # Every mailbox that is not supervised (customers, staff) is the sink.
            "default_transport": self.sink_nexthop,
            "relay_transport": self.sink_nexthop,
            "smtp_dns_support_level": "disabled",
            "smtpd_peername_lookup": "no",  # no reverse DNS for 127.0.0.2
            "alias_maps": "",
            "alias_database": "",
            "biff": "no",
        }
        if self.submission_port is not None:
            tls = self.etc / "tls"
            base["smtpd_sasl_type"] = "cyrus"
            base["smtpd_sasl_path"] = "smtpd"
            base["smtpd_tls_chain_files"] = f"{tls / 'key.pem'}, {tls / 'cert.pem'}"
        contrib = require((CONTRIB / "main.cf").read_text(), SUBSTITUTIONS["main.cf"], "main.cf")
        replacements = {TRANSPORT_MAP: f"hash:{self.etc / 'casegate_transport'}",
                        HEADER_CHECKS: f"regexp:{self.etc / 'casegate_header_checks'}"}
        if self.milter:
            replacements[MILTER_LINE] = f"smtpd_milters = {{ {self.milter},"
            for line in GATE_LINES:
                replacements[line] = line[1:].replace("inet:127.0.0.1:10027", self.milter)
        contrib = substitute(contrib, replacements, "main.cf")
        if self.milter:
            contrib = contrib.replace(GATE_MAP, f"hash:{self.etc / 'casegate_recipients'}")
        text = (
            "# Private test instance written by tests/support/postfix.py\n"
            + _settings(base)
            + "\n# ---- contrib/postfix/main.cf ----\n"
            + contrib
        )
        overrides = {**FAST_RETRY, **self.extra_main}
        text = _comment_out(text, overrides)
        text += "\n# ---- test-only overrides (FAST_RETRY, extra_main) ----\n"
        return text + _settings(overrides)

    def master_cf(self) -> str:
        contrib = require(
            (CONTRIB / "master.cf").read_text(), SUBSTITUTIONS["master.cf"], "master.cf"
        )
        if self.submission_port is not None:
            contrib = _uncomment_block(contrib, SUBMISSION_LINE, SUBMISSION_OPTION)
            contrib = substitute(
                contrib, {"submission inet": f"127.0.0.1:{self.submission_port} inet"}, "master.cf"
            )
        contrib = substitute(
            contrib, {REINJECT_LISTENER: f"127.0.0.1:{self.reinject_port} inet"}, "master.cf"
        )
        public = f"127.0.0.1:{self.smtpd_port} inet n - n - - smtpd\n"
        return _MASTER_BASE + public + "\n# ---- contrib/postfix/master.cf ----\n" + contrib

    def transport_map(self) -> str:
        text = (CONTRIB / "casegate_transport").read_text()
        entries = contrib_transport_entries(text)
        drifted = [e for e in entries if e[1] != FILTER_NEXTHOP]
        if not entries or drifted:
            raise ContribDrift(
                f"contrib/postfix/casegate_transport: every entry must route to "
                f"{FILTER_NEXTHOP!r}; found {entries!r}"
            )
        nexthop = FILTER_NEXTHOP.replace(":10025", f":{self.filter_port}")
        comments = "".join(
            line + "\n" for line in text.splitlines() if line.lstrip().startswith("#")
        )
        lines = [f"{addr}\t{nexthop}\n" for addr in self.supervised]
        lines += [f"{domain}\t{self.sink_nexthop}\n" for domain in self.domains]
        return comments + "".join(lines)

    def header_checks(self) -> str:
        """contrib/postfix/casegate_header_checks as it is."""
        name = "casegate_header_checks"
        return require((CONTRIB / name).read_text(), SUBSTITUTIONS[name], name)

    def recipients_map(self) -> str:
        """contrib/postfix/casegate_recipients for the ``supervised`` addresses."""
        text = require(
            (CONTRIB / "casegate_recipients").read_text(),
            SUBSTITUTIONS["casegate_recipients"],
            "casegate_recipients",
        )
        comments = "".join(
            line + "\n" for line in text.splitlines() if line.lstrip().startswith("#")
        )
        return comments + "".join(f"{addr}\tcasegate_gate\n" for addr in self.supervised)

    def set_supervised(self, addresses: Sequence[str]) -> None:
        """Route exactly ``addresses`` to the filter from now on, the way
        contrib/postfix/README.md tells the admin: rewrite the map, postmap,
        reload (running daemons keep the old map until then)."""
        self.supervised = tuple(addresses)
        (self.etc / "casegate_transport").write_text(self.transport_map())
        (self.etc / "casegate_recipients").write_text(self.recipients_map())
        (self.etc / "casegate_header_checks").write_text(self.header_checks())
        self._age_config()
        for name in ("casegate_transport", "casegate_recipients"):
            self._run(["postmap", "-c", str(self.etc), f"hash:{self.etc / name}"])
        if self._running:
            self.reload()

    def _age_config(self) -> None:
        """Date the files we just wrote a minute back. Postfix re-reads a
        table or main.cf modified within the current second, 300 ms at a time,
        until it is older (it might be half-written): 1.5 s per command."""
        past = time.time() - 60
        for name in ("main.cf", "master.cf", "casegate_transport", "casegate_recipients",
                     "casegate_header_checks"):
            path = self.etc / name
            if path.exists():
                os.utime(path, (past, past))

    def _make_tls(self) -> None:
        tls = self.etc / "tls"
        tls.mkdir(exist_ok=True)
        if (tls / "cert.pem").exists():
            return
        self._run(
            [
                "openssl", "req", "-x509", "-newkey", "ec",
                "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", str(tls / "key.pem"), "-out", str(tls / "cert.pem"),
                "-days", "2", "-subj", "/CN=mx.test.example",
            ]
        )  # fmt: skip
        (tls / "key.pem").chmod(0o600)

    def _make_sasl_conf(self) -> None:
        # Debian's Postfix reads $config_directory/sasl/smtpd.conf.
        sasl = self.etc / "sasl"
        sasl.mkdir(exist_ok=True)
        (sasl / "smtpd.conf").write_text(
            "pwcheck_method: auxprop\n"
            "auxprop_plugin: sasldb\n"
            "mech_list: PLAIN LOGIN\n"
            f"sasldb_path: {self.sasldb}\n"
        )

    def add_sasl_user(self, login: str, password: str) -> None:
        """Create or update ``user@realm`` in the sasldb (no reload needed)."""
        user, at, realm = login.rpartition("@")
        if not at or not user or not realm:
            raise ValueError(f"SASL login must be user@realm: {login!r}")
        self._run(
            ["saslpasswd2", "-p", "-c", "-f", str(self.sasldb), "-u", realm, user],
            input=password,
        )
        shutil.chown(self.sasldb, user="postfix")
        self.sasldb.chmod(0o600)

    def set_main(self, settings: Mapping[str, str], reload: bool = True) -> None:
        """Change main.cf parameters in place (``postconf -e``); reload if running."""
        self._run(
            ["postconf", "-c", str(self.etc), "-e", *(f"{k}={v}" for k, v in settings.items())]
        )
        self._age_config()
        if reload and self._running:
            self.reload()

    def config_warnings(self) -> list[str]:
        """What ``postconf`` warns about this configuration (unused or unknown
        parameters, bad master.cf lines); empty when all is well."""
        out = []
        for args in (["-n"], ["-M"]):
            proc = subprocess.run(
                ["postconf", "-c", str(self.etc), *args], capture_output=True, text=True
            )
            out += [line for line in proc.stderr.splitlines() if line.strip()]
        return out

    # --- life cycle -----------------------------------------------------------
    def start(self) -> PostfixInstance:
        if not self._built:
            self.build()
        proc = subprocess.run(
            ["postfix", "-c", str(self.etc), "start"], capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise PostfixError(
                f"postfix start failed ({proc.returncode}): {proc.stdout}{proc.stderr}\n"
                f"{self._diagnose()}--- {self.maillog_path} (tail) ---\n{self.maillog_tail()}"
            )
        # `postfix start` runs `master -w`, which returns once the master has
        # opened its listeners: no need to probe the ports.
        self._running = True
        return self

    def _diagnose(self) -> str:
        """Likely causes of a failed start. The master's own fatal message goes
        to syslog, which these machines lack, or to its postlogd, which is not
        up yet; `script -qc "postfix -c ETC start" /dev/null` shows it."""
        notes = []
        listeners = {"smtpd_port": self.smtpd_port, "reinject_port": self.reinject_port}
        if self.submission_port is not None:
            listeners["submission_port"] = self.submission_port
        for name, port in listeners.items():
            if _port_in_use(port):
                notes.append(f"{name} {port} is in use by another process")
        check = subprocess.run(
            ["postfix", "-c", str(self.etc), "check"], capture_output=True, text=True
        )
        if check.returncode != 0 or check.stderr.strip():
            notes.append(f"postfix check: {check.stderr.strip() or check.stdout.strip()}")
        return "".join(f"- {n}\n" for n in notes)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the instance the way ``postfix stop`` does (SIGTERM to its
        master, which terminates its children) and wait until the master is gone."""
        if not self._running:
            return
        self._running = False
        pid = self.master_pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while _alive(pid):
            if time.monotonic() > deadline:
                raise PostfixError(f"Postfix master {pid} still running {timeout}s after SIGTERM")
            time.sleep(0.02)

    def reload(self, timeout: float = 10.0) -> None:
        """``postfix reload`` and wait until the master has logged it."""
        pos = self.log_position()
        self._run(["postfix", "-c", str(self.etc), "reload"])
        self.wait_for_log(r"reload -- version", timeout=timeout, since=pos)

    def master_pid(self) -> int | None:
        try:
            return int((self.spool / "pid" / "master.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def __enter__(self) -> PostfixInstance:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- queue ----------------------------------------------------------------
    def flush(self) -> None:
        """``postqueue -f``: retry all deferred mail now (and forget dead destinations)."""
        self._run(["postqueue", "-c", str(self.etc), "-f"])

    def queue(self) -> list[dict[str, object]]:
        """The queue as ``postqueue -j`` reports it (one dict per message)."""
        out = self._run(["postqueue", "-c", str(self.etc), "-j"])
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def queue_ids(self) -> list[str]:
        return [str(m["queue_id"]) for m in self.queue()]

    def wait_deferred(self, queue_id: str, timeout: float = 10.0) -> None:
        """Wait until ``queue_id`` sits in the deferred queue. The delivery
        agent logs ``status=deferred`` before the queue manager moves the file
        there; a flush() in between finds nothing to flush, and the message
        then waits out its back-off."""
        deadline = time.monotonic() + timeout
        while True:
            queue = self.queue()
            if any(m["queue_id"] == queue_id and m["queue_name"] == "deferred" for m in queue):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{queue_id} not deferred after {timeout}s: {queue!r}")
            time.sleep(0.05)

    def wait_queue_empty(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            queue = self.queue()
            if not queue:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"queue not empty after {timeout}s: {queue!r}")
            time.sleep(0.1)

    # --- log ------------------------------------------------------------------
    def maillog(self, since: int = 0) -> str:
        """The instance's log (from byte offset ``since``)."""
        try:
            with self.maillog_path.open("rb") as f:
                f.seek(since)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_position(self) -> int:
        """The log's current size, to pass as ``since`` later."""
        try:
            return self.maillog_path.stat().st_size
        except FileNotFoundError:
            return 0

    def maillog_tail(self, lines: int = 40) -> str:
        return "\n".join(self.maillog().splitlines()[-lines:])

    def wait_for_log(self, regex: str, timeout: float = 10.0, since: int = 0) -> re.Match[str]:
        """Wait until a log line (after byte offset ``since``) matches ``regex``."""
        pattern = re.compile(regex, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            m = pattern.search(self.maillog(since))
            if m:
                return m
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"no log line matching {regex!r} after {timeout}s; tail:\n{self.maillog_tail()}"
                )
            time.sleep(0.05)

    # --- mail -----------------------------------------------------------------
    def send(
        self,
        mail_from: str,
        rcpt_tos: Sequence[str],
        message: EmailMessage | bytes,
        *,
        source: str = "127.0.0.2",
    ) -> str:
        """Submit to the public listener from ``source``; return the queue ID."""
        return send_message(
            "127.0.0.1", self.smtpd_port, mail_from, rcpt_tos, message,
            source_address=(source, 0),
        )  # fmt: skip

    def submit(
        self, login: tuple[str, str], mail_from: str, rcpt_tos: Sequence[str],
        message: EmailMessage | bytes,
    ) -> str:  # fmt: skip
        """Submit on the submission listener after STARTTLS and a SASL login."""
        if self.submission_port is None:
            raise PostfixError("this instance has no submission listener")
        return send_message(
            "127.0.0.1", self.submission_port, mail_from, rcpt_tos, message,
            source_address=("127.0.0.2", 0), login=login, starttls=True,
        )  # fmt: skip

    # --- helpers ----------------------------------------------------------------
    def _run(self, args: list[str], input: str | None = None) -> str:
        proc = subprocess.run(args, capture_output=True, text=True, input=input)
        if proc.returncode != 0:
            raise PostfixError(
                f"{' '.join(args)} failed ({proc.returncode}): {proc.stdout}{proc.stderr}"
            )
        return proc.stdout


def _settings(settings: Mapping[str, str]) -> str:
    return "".join(f"{k} = {v}\n" for k, v in settings.items())


def _comment_out(text: str, keys: Mapping[str, str]) -> str:
    """Comment out earlier definitions of ``keys`` (a later one follows):
    Postfix would use the last one anyway, but warns "overriding earlier entry"."""
    out: list[str] = []
    commenting = False
    for line in text.splitlines(keepends=True):
        name = line.split("=", 1)[0].strip() if not line[:1].isspace() else None
        if name is not None:
            commenting = "=" in line and name in keys
        if commenting:
            out.append("#" + line if name is None else f"#{line.rstrip()}  # overridden below\n")
        else:
            out.append(line)
    return "".join(out)


def _uncomment_block(text: str, first: str, continuation: str) -> str:
    """Uncomment the line ``first`` and the lines after it that start with
    ``continuation`` (the ``-o`` options of a commented master.cf entry)."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    in_block = False
    found = False
    for line in lines:
        if line.rstrip("\n") == first:
            in_block = found = True
            out.append(line[1:])
        elif in_block and line.startswith(continuation):
            out.append(line[1:])
        else:
            in_block = False
            out.append(line)
    if not found:
        raise ContribDrift(f"contrib/postfix/master.cf: no line {first!r} to uncomment")
    return "".join(out)


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone: Postfix's master is
    not our child, and PID 1 in a container may never reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


# The services a private instance needs, chroot "n" on every line (a chrooted
# service would need copies of /etc files in $queue_directory/etc).
_MASTER_BASE = """\
# Private test instance written by tests/support/postfix.py
# service type  private unpriv  chroot  wakeup  maxproc command + args
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
# The public listener ("port 25" of the test): the internet's way in.
"""
