"""``casegate check``: is the live Postfix wired the way contrib/postfix/ says?

Each check reads what Postfix itself reports (``postconf -n``, ``-M``, ``-P``,
``postmap -q``) or asks a socket, and returns a :class:`Check`: its name, OK,
FAIL or SKIP, what was seen, and for a failure the exact line to add. Nothing
here changes a file. The world is injected: the commands are run by ``run``
(subprocess by default), DNS is asked through ``resolve`` (dnspython by
default), so tests pass a fake resolver only.

The contract checked (docs/postfix.md has the why of each line):

* every supervised address routes, through ``transport_maps``, to a master.cf
  smtp/lmtp transport whose next hop is the filter's listen address;
* the re-injection listener (master.cf service ``HOST:PORT inet … smtpd`` at
  casegate's ``reinject`` address) has ``-o content_filter=``,
  ``-o smtpd_milters=`` and ``receive_override_options`` with
  ``no_unknown_recipient_checks,no_header_body_checks,no_milters``;
* ``recipient_delimiter`` contains ``+`` (case and VERP plus-addresses);
* when casegate runs a milter: Postfix's ``smtpd_milters`` names it, and a
  casegate outage holds supervised mail: the milter's default action is
  ``tempfail``, or ``accept`` with the recipient gate in front of every
  supervised address (contrib's wiring);
* the filter, the re-injection listener (and the milter) answer;
* the store is reachable and migrated;
* the DKIM key (when casegate signs) matches the record published in DNS,
  when DNS can be asked.
"""

from __future__ import annotations

import base64
import re
import smtplib
import socket
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

OK, FAIL, SKIP = "OK", "FAIL", "SKIP"

#: receive_override_options the re-injection listener must have (contrib/postfix/master.cf).
REINJECT_OVERRIDES = ("no_unknown_recipient_checks", "no_header_body_checks", "no_milters")

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]
#: ``resolve(name)``: the TXT strings at ``name`` joined per record, [] when
#: there is none; raises :class:`DnsUnreachable` when DNS cannot be asked.
Resolver = Callable[[str], list[str]]


class DnsUnreachable(Exception):
    """No answer from DNS at all (no resolver, time-out): the check is skipped."""


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # OK, FAIL or SKIP
    detail: str
    fix: tuple[str, ...] = ()  # the lines to add, for a FAIL

    @property
    def ok(self) -> bool:
        return self.status != FAIL

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fix": list(self.fix)}


@dataclass(frozen=True)
class Wiring:
    """What casegate is configured with: the other side of the contract."""

    supervised: tuple[str, ...]
    listen: tuple[str, int]
    reinject: tuple[str, int]
    milter: str | None = None  # casegate's milter address: HOST:PORT or unix:/path
    postfix_config: Path | None = None  # as for `postconf -c`; None: the system's
    dkim: dict[str, Any] = field(default_factory=dict)


def _run(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=30, check=False)


def dns_txt(name: str) -> list[str]:
    """The default resolver (dnspython, which dkimpy depends on)."""
    import dns.exception
    import dns.resolver

    try:
        answer = dns.resolver.resolve(name, "TXT", lifetime=5)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except (dns.exception.DNSException, OSError) as exc:
        raise DnsUnreachable(str(exc) or type(exc).__name__) from exc
    return [b"".join(r.strings).decode("ascii", "replace") for r in answer]


# -- reading Postfix --------------------------------------------------------------


class PostfixError(Exception):
    pass


@dataclass(frozen=True)
class Service:
    name: str
    type: str
    command: str
    options: dict[str, str]  # the -o overrides, from `postconf -P`


class Postfix:
    """The live configuration, as postconf reports it."""

    def __init__(self, config_dir: Path | None, run: Runner = _run) -> None:
        self.config_dir = config_dir
        self._run = run
        self._params: dict[str, str] = {}

    def _c(self) -> list[str]:
        return ["-c", str(self.config_dir)] if self.config_dir is not None else []

    def _call(self, *args: str) -> str:
        try:
            proc = self._run(args)
        except FileNotFoundError as exc:
            raise PostfixError(f"{args[0]} not found: is Postfix installed?") from exc
        except subprocess.TimeoutExpired as exc:
            raise PostfixError(f"{' '.join(args)} timed out") from exc
        if proc.returncode != 0:
            raise PostfixError(f"{' '.join(args)} failed: {(proc.stderr or proc.stdout).strip()}")
        return proc.stdout

    def param(self, name: str) -> str:
        """The effective value of a main.cf parameter ($names expanded)."""
        if name not in self._params:
            self._params[name] = self._call("postconf", *self._c(), "-xh", name).strip()
        return self._params[name]

    def version(self) -> str:
        return self.param("mail_version")

    def services(self) -> list[Service]:
        options: dict[tuple[str, str], dict[str, str]] = {}
        for line in self._call("postconf", *self._c(), "-P").splitlines():
            # "service/type/name = value"; an empty value is "service/type/name ="
            key, eq, value = line.partition(" =")
            parts = key.split("/")
            if eq and len(parts) == 3:
                options.setdefault((parts[0], parts[1]), {})[parts[2]] = value.strip()
        out = []
        for line in self._call("postconf", *self._c(), "-M").splitlines():
            fields = line.split()
            if len(fields) >= 8:
                out.append(Service(fields[0], fields[1], fields[7],
                                   options.get((fields[0], fields[1]), {})))
        return out

    def lookup(self, table: str, key: str) -> str | None:
        """``postmap -q KEY TABLE``: the value, or None when there is none."""
        args = ["postmap", *self._c(), "-q", key, table]
        try:
            proc = self._run(args)
        except FileNotFoundError as exc:
            raise PostfixError("postmap not found: is Postfix installed?") from exc
        if proc.returncode == 0:
            return proc.stdout.strip()
        if proc.returncode == 1 and not proc.stderr.strip():
            return None
        raise PostfixError(f"{' '.join(args)} failed: {(proc.stderr or proc.stdout).strip()}")


def split_list(value: str) -> list[str]:
    """A Postfix list (commas and/or spaces), keeping ``{ … }`` groups whole."""
    items: list[str] = []
    depth, current = 0, ""
    for ch in value:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if depth == 0 and (ch in ", \t\n"):
            if current.strip():
                items.append(current.strip())
            current = ""
        else:
            current += ch
    if current.strip():
        items.append(current.strip())
    return items


def _endpoint(value: str) -> str:
    """``inet:127.0.0.1:10027`` / ``127.0.0.1:10027`` / ``inet:[127.0.0.1]:10027`` -> one form."""
    value = value.strip()
    if value.startswith("unix:"):
        return value
    value = value.removeprefix("inet:")
    host, _, port = value.rpartition(":")
    host = host.strip("[]")
    if host in ("localhost", ""):
        host = "127.0.0.1"
    return f"inet:{host}:{port}"


def _milter_entry(item: str) -> tuple[str, dict[str, str]]:
    """An smtpd_milters item -> (endpoint, per-milter settings)."""
    if item.startswith("{"):
        inner = [p.strip() for p in item.strip("{} \t").split(",") if p.strip()]
        settings = {}
        for part in inner[1:]:
            k, _, v = part.partition("=")
            settings[k.strip()] = v.strip()
        return _endpoint(inner[0]) if inner else "", settings
    return _endpoint(item), {}


def _nexthop(value: str) -> tuple[str, str, int | None]:
    """``casegate:[127.0.0.1]:10025`` -> ("casegate", "127.0.0.1", 10025)."""
    transport, _, hop = value.partition(":")
    hop = hop.strip()
    port: int | None = None
    m = re.fullmatch(r"\[?([^\]]*?)\]?(?::(\d+))?", hop)
    host = hop
    if m:
        host = m.group(1)
        port = int(m.group(2)) if m.group(2) else None
    return transport.strip(), host, port


# -- the checks -----------------------------------------------------------------


def check_all(w: Wiring, *, store_check: Callable[[], str] | None = None,
              run: Runner = _run, resolve: Resolver = dns_txt,
              smtp_timeout: float = 5.0) -> list[Check]:
    """Every check, in the order a sysadmin fixes them."""
    checks: list[Check] = []
    pf = Postfix(w.postfix_config, run)
    where = str(w.postfix_config) if w.postfix_config else "the system's"
    try:
        checks.append(Check("postconf", OK, f"Postfix {pf.version()}, configuration {where}"))
        services = pf.services()
    except PostfixError as exc:
        checks.append(Check("postconf", FAIL, f"cannot read the Postfix configuration ({where}): {exc}",
                            ("check --postfix-config DIR (the directory of main.cf, as for postconf -c)",)))
        services = None
    if services is not None:
        for step in (_routes, _reinject_listener, _delimiter, _milter):
            try:
                checks += step(w, pf, services)
            except PostfixError as exc:
                checks.append(Check(step.__name__.strip("_"), FAIL, str(exc)))
    checks.append(_answers("filter_port", w.listen, "casegate serve (the filter)", smtp_timeout,
                           expect_casegate=True))
    checks.append(_answers("reinject_port", w.reinject, "Postfix's re-injection listener",
                           smtp_timeout))
    if w.milter:
        checks.append(_milter_answers(w.milter, smtp_timeout))
    if store_check is not None:
        checks.append(_store(store_check))
    checks.append(_dkim(w.dkim, resolve))
    return checks


def _transport_line(address: str, listen: tuple[str, int]) -> str:
    return f"{address}\tcasegate:[{listen[0]}]:{listen[1]}"


def _routes(w: Wiring, pf: Postfix, services: list[Service]) -> list[Check]:
    maps = split_list(pf.param("transport_maps"))
    files = [m for m in maps if m.split(":", 1)[0] in ("hash", "lmdb", "btree", "cdb", "texthash")]
    mapfile = files[0] if files else "hash:/etc/postfix/casegate_transport"
    mapname = mapfile.split(":", 1)[1]
    clients = {s.name: s for s in services if s.type == "unix" and s.command in ("smtp", "lmtp")}
    if not w.supervised:
        return [Check("route", SKIP, "no supervised address in the store (`casegate mailbox add`)")]
    if not maps:
        return [Check(f"route {a}", FAIL, "transport_maps is empty: Postfix does not route it to casegate",
                      ("main.cf: transport_maps = hash:/etc/postfix/casegate_transport",
                       f"{mapname}: {_transport_line(a, w.listen)}",
                       f"then: postmap {mapfile} && postfix reload")) for a in w.supervised]
    out = []
    for address in w.supervised:
        found: tuple[str, str] | None = None
        domain = address.rpartition("@")[2]
        for key in (address, domain):
            for table in maps:
                value = pf.lookup(table, key)
                if value is not None:
                    found = (table, value)
                    break
            if found:
                break
        fix = (f"{mapname}: {_transport_line(address, w.listen)}",
               f"then: postmap {mapfile} && postfix reload")
        if found is None:
            out.append(Check(f"route {address}", FAIL,
                             f"no entry in transport_maps ({', '.join(maps)}): mail for it never "
                             "reaches casegate", fix))
            continue
        table, value = found
        transport, host, port = _nexthop(value)
        service = clients.get(transport)
        host_ok = host == w.listen[0] or w.listen[0] in ("0.0.0.0", "::", "")
        if port != w.listen[1] or not host_ok:
            out.append(Check(f"route {address}", FAIL,
                             f"routed to {value!r} ({table}), not to casegate's filter at "
                             f"{w.listen[0]}:{w.listen[1]}", fix))
        elif service is None:
            out.append(Check(f"route {address}", FAIL,
                             f"routed to {value!r}, but master.cf has no smtp transport named "
                             f"{transport!r}",
                             ("master.cf: the `casegate  unix  -  -  n  -  10  smtp` block of "
                              "contrib/postfix/master.cf", "then: postfix reload")))
        else:
            out.append(Check(f"route {address}", OK, f"{value} ({table})"))
    return out


def _reinject_listener(w: Wiring, pf: Postfix, services: list[Service]) -> list[Check]:
    host, port = w.reinject
    names = {f"{host}:{port}", f"[{host}]:{port}"}
    if host in ("127.0.0.1", "localhost"):
        names |= {f"localhost:{port}"}
    listener = next((s for s in services if s.type == "inet" and s.name in names
                     and s.command == "smtpd"), None)
    label = f"{host}:{port}"
    if listener is None:
        return [Check("reinject_listener", FAIL,
                      f"master.cf has no smtpd listening on {label}, where casegate re-injects",
                      (f"master.cf: the `127.0.0.1:10026 inet  n - n - - smtpd` block of "
                       f"contrib/postfix/master.cf, with {label} as its service name",
                       "then: postfix reload"))]
    prefix = f"{listener.name}/inet"
    opts = listener.options
    out = [Check("reinject_listener", OK, f"master.cf: {listener.name} inet smtpd")]
    cf = opts.get("content_filter")
    if cf is None:
        out.append(Check("reinject_content_filter", FAIL,
                         f"{label} does not turn content_filter off (a site-wide content_filter "
                         f"would filter casegate's own mail; main.cf has {pf.param('content_filter')!r})",
                         (f"master.cf, under {listener.name}: -o content_filter=",
                          f"or: postconf -P '{prefix}/content_filter=' && postfix reload")))
    elif cf.strip():
        out.append(Check("reinject_content_filter", FAIL,
                         f"{label} has content_filter={cf}: casegate's own mail would be filtered",
                         (f"master.cf, under {listener.name}: -o content_filter=",
                          f"or: postconf -P '{prefix}/content_filter=' && postfix reload")))
    else:
        out.append(Check("reinject_content_filter", OK, "-o content_filter="))
    roo = [o.strip() for o in re.split(r"[,\s]+", opts.get("receive_override_options",
                                                           pf.param("receive_override_options"))) if o]
    milters = opts.get("smtpd_milters")
    problems = []
    if milters is None or milters.strip():
        problems.append("smtpd_milters is not empty" if milters else "no -o smtpd_milters=")
    if "no_milters" not in roo:
        problems.append("receive_override_options lacks no_milters")
    if problems:
        out.append(Check("reinject_milters", FAIL,
                         f"{label}: {'; '.join(problems)}: milters would judge (and the gate hold) "
                         "casegate's own mail",
                         (f"master.cf, under {listener.name}: -o smtpd_milters=",
                          f"master.cf, under {listener.name}: -o receive_override_options="
                          + ",".join(REINJECT_OVERRIDES), "then: postfix reload")))
    else:
        out.append(Check("reinject_milters", OK, "-o smtpd_milters= and no_milters"))
    missing = [o for o in REINJECT_OVERRIDES if o not in roo]
    if missing:
        out.append(Check("reinject_receive_override_options", FAIL,
                         f"{label}: receive_override_options={','.join(roo) or '(empty)'} lacks "
                         f"{', '.join(missing)}",
                         (f"master.cf, under {listener.name}: -o receive_override_options="
                          + ",".join(REINJECT_OVERRIDES), "then: postfix reload")))
    else:
        out.append(Check("reinject_receive_override_options", OK, ",".join(roo)))
    return out


def _delimiter(w: Wiring, pf: Postfix, services: list[Service]) -> list[Check]:
    value = pf.param("recipient_delimiter")
    if "+" in value:
        return [Check("recipient_delimiter", OK, f"recipient_delimiter = {value}")]
    fix = f"main.cf: recipient_delimiter = {value}+" if value else "main.cf: recipient_delimiter = +"
    return [Check("recipient_delimiter", FAIL,
                  f"recipient_delimiter = {value or '(empty)'}: support+CS0000123@… and the VERP "
                  "addresses of casegate's mail do not route to their mailbox",
                  (fix, "then: postfix reload"))]


def _milter(w: Wiring, pf: Postfix, services: list[Service]) -> list[Check]:
    if not w.milter:
        return [Check("milter", SKIP, "casegate runs no milter ([serve] milter / --milter)")]
    want = _endpoint(w.milter)
    entries = [_milter_entry(i) for i in split_list(pf.param("smtpd_milters"))]
    ours = next((s for e, s in entries if e == want), None)
    contrib_line = (f"main.cf: smtpd_milters = {{ {want}, default_action=accept, connect_timeout=10s, "
                    "command_timeout=10s, content_timeout=60s }")
    gate_lines = ("main.cf: smtpd_restriction_classes = casegate_gate",
                  f"main.cf: casegate_gate = check_policy_service {{ {want}, timeout=10s, try_limit=1, "
                  "{ default_action = 451 4.3.0 casegate unavailable: try again later } }",
                  "main.cf: smtpd_recipient_restrictions = check_recipient_access "
                  "hash:/etc/postfix/casegate_recipients, (then your restrictions)")
    if ours is None:
        return [Check("milter", FAIL, f"smtpd_milters does not name casegate's milter {want}",
                      (contrib_line, *gate_lines, "then: postfix reload"))]
    action = ours.get("default_action") or pf.param("milter_default_action")
    if action == "tempfail":
        return [Check("milter", OK, f"{want}, default_action=tempfail")]
    if action != "accept":
        return [Check("milter", FAIL, f"{want} has default_action={action}: while casegate is down "
                      "every client's mail is refused or dropped",
                      ("main.cf: milter_default_action = tempfail", "then: postfix reload"))]
    ungated = _ungated(w, pf, want)
    if not ungated:
        return [Check("milter", OK, f"{want}, default_action=accept with the recipient gate")]
    return [Check("milter", FAIL,
                  f"{want} has default_action=accept and no recipient gate for {', '.join(ungated)}: "
                  "while casegate is down their mail gets in unchecked",
                  ("main.cf: milter_default_action = tempfail  (everyone's mail waits while casegate "
                   "is down), or the recipient gate:", *gate_lines,
                   "casegate_recipients: " + "  ".join(f"{a} casegate_gate" for a in ungated),
                   "then: postmap hash:/etc/postfix/casegate_recipients && postfix reload"))]


def _ungated(w: Wiring, pf: Postfix, want: str) -> list[str]:
    """Supervised addresses that smtpd_recipient_restrictions does not send
    through a check_policy_service at casegate's milter address."""
    items = split_list(pf.param("smtpd_recipient_restrictions"))
    tables = [items[i + 1] for i, item in enumerate(items[:-1]) if item == "check_recipient_access"]
    out = []
    for address in w.supervised:
        gated = False
        for table in tables:
            value = pf.lookup(table, address)
            if not value:
                continue
            for restriction in split_list(value):
                definition = pf.param(restriction) if re.fullmatch(r"\w+", restriction) else ""
                if "check_policy_service" in definition and _mentions(definition, want):
                    gated = True
            if gated:
                break
        if not gated:
            out.append(address)
    return out


def _mentions(text: str, endpoint: str) -> bool:
    return any(_endpoint(tok) == endpoint for tok in re.findall(r"(?:inet:|unix:)[^\s,{}]+", text))


def _answers(name: str, at: tuple[str, int], what: str, timeout: float,
             expect_casegate: bool = False) -> Check:
    host, port = at
    label = f"{host}:{port}"
    try:
        with smtplib.SMTP(local_hostname="casegate-check.localhost", timeout=timeout) as s:
            _, banner = s.connect(host, port)
            code, _ = s.ehlo()
            ours = b"casegate" in banner and s.has_extn("xforward")
    except (OSError, smtplib.SMTPException) as exc:
        fix = ("start it: systemctl start casegate (or `casegate serve`)" if name == "filter_port"
               else "check master.cf's re-injection listener, then: postfix reload")
        return Check(name, FAIL, f"{what} does not answer on {label}: {exc}", (fix,))
    if code != 250:
        return Check(name, FAIL, f"{what} on {label} answered EHLO with {code}")
    if expect_casegate and not ours:
        return Check(name, FAIL, f"{label} answers but is not casegate's filter (greeting "
                     f"{banner.decode(errors='replace')!r})",
                     ("point [serve] listen (or --listen) at the port of the casegate transport",))
    return Check(name, OK, f"{what} answers EHLO on {label}")


def _milter_answers(milter: str, timeout: float) -> Check:
    target = _endpoint(milter)
    try:
        if target.startswith("unix:"):
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(timeout)
                s.connect(target[5:])
        else:
            host, _, port = target[5:].rpartition(":")
            socket.create_connection((host, int(port)), timeout=timeout).close()
    except (OSError, ValueError) as exc:
        return Check("milter_port", FAIL, f"casegate's milter does not accept connections on {target}: "
                     f"{exc}", ("start it: systemctl start casegate (serve --milter, or casegate milter)",))
    return Check("milter_port", OK, f"casegate's milter accepts connections on {target}")


def _store(store_check: Callable[[], str]) -> Check:
    try:
        detail = store_check()
    except Exception as exc:
        text = str(exc)
        fix = "run: casegate init" if "init" in text else "check the store URL and the database server"
        return Check("store", FAIL, text, (fix,))
    return Check("store", OK, detail)


def _dkim(conf: dict[str, Any], resolve: Resolver) -> Check:
    if not conf.get("key"):
        return Check("dkim", SKIP, "casegate signs nothing ([dkim] key not set)")
    from smtpd_hook import dkim

    domain, selector = str(conf.get("domain", "")), str(conf.get("selector", "casegate"))
    try:
        signer = dkim.Signer.load(domain, selector, Path(str(conf["key"])))
        want = base64.b64encode(dkim._public_key_der(signer._key.public_key())).decode()
        record = dkim.public_key_record(Path(str(conf["key"])), domain=domain, selector=selector)
    except (ValueError, OSError) as exc:
        return Check("dkim", FAIL, f"[dkim] key: {exc}", ("casegate dkim keygen …, or fix [dkim]",))
    name = f"{selector}._domainkey.{domain}"
    try:
        texts = resolve(name)
    except DnsUnreachable as exc:
        return Check("dkim", SKIP, f"DNS not reachable ({exc}): cannot compare the key with {name}")
    published = []
    for text in texts:
        tags = dict(part.strip().partition("=")[::2] for part in text.split(";") if "=" in part)
        published.append(re.sub(r"\s+", "", tags.get("p", "")))
    if want in published:
        return Check("dkim", OK, f"{name} publishes casegate's key")
    seen = "no TXT record" if not texts else f"another key ({len(texts)} record(s))"
    return Check("dkim", FAIL, f"{name}: {seen}; signatures by casegate will not verify",
                 (f"publish in DNS: {' '.join(record.split())}",))


# -- presenting -----------------------------------------------------------------


def render(checks: Sequence[Check]) -> str:
    lines = []
    for c in checks:
        lines.append(f"{c.status:<4} {c.name}: {c.detail}")
        lines += [f"       fix: {line}" for line in c.fix] if c.status == FAIL else []
    failed = sum(c.status == FAIL for c in checks)
    lines.append(f"{failed} problem(s)" if failed else "all checks passed")
    return "\n".join(lines)
