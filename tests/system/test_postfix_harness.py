"""The Postfix side of casegate, through a real private Postfix built from
contrib/postfix/: routing to the filter, XFORWARD, re-injection without a
second pass, deferral on 451 and on a dead filter, SASL on submission, a
dead milter. Each test has its own instance (about 0.4 s to start)."""

from __future__ import annotations

import re
import shutil
import smtplib
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.support import postfix
from tests.support.nullfilter import REINJECT_SUFFIX, TEMPFAIL, NullFilter
from tests.support.postfix import (
    CONTRIB,
    FILTER_NEXTHOP,
    ContribDrift,
    PostfixInstance,
    free_port,
    free_ports,
    postfix_missing,
    sasl_missing,
    send_message,
)
from tests.support.sink import Sink

# make_sink, make_nullfilter, make_postfix (harmless if conftest registers them too).

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(postfix_missing() is not None, reason=str(postfix_missing())),
    pytest.mark.timeout(60),
]

CUSTOMER = "customer@outside.test"
# Slow retries: only flush() can deliver deferred mail within a test.
NO_RETRY = {
    "queue_run_delay": "300s",
    "minimal_backoff_time": "300s",
    "maximal_backoff_time": "300s",
}


def message(subject: str, to: str = "support@example.com") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = CUSTOMER
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{re.sub(r'[^a-z0-9]+', '-', subject.lower())}@client.test>"
    msg.set_content(f"{subject}\n")
    return msg


Setup = tuple[PostfixInstance, NullFilter, Sink]


@pytest.fixture
def setup(
    make_sink: Callable[..., Sink],
    make_nullfilter: Callable[..., NullFilter],
    make_postfix: Callable[..., PostfixInstance],
) -> Callable[..., Setup]:
    """Sink + null filter + Postfix wired together; keywords go to Postfix."""

    def build(
        *, submission_port: int | None = None, milter: str | None = None, **keywords: object
    ) -> Setup:
        sink = make_sink()
        # All ports picked at once, around those already taken (a port just
        # released by free_port() may come back from the next call).
        taken = [sink.port, submission_port or 0]
        taken += [int(milter.rpartition(":")[2])] if milter else []
        filter_port, reinject_port, smtpd_port = free_ports(3, exclude=taken)
        nf = make_nullfilter(reinject_port, port=filter_port, forward_xforward=True)
        pf = make_postfix(
            sink_port=sink.port,
            smtpd_port=smtpd_port,
            filter_port=filter_port,
            reinject_port=reinject_port,
            submission_port=submission_port,
            milter=milter,
            **keywords,
        )
        return pf, nf, sink

    return build


def test_contrib_snippets_make_a_clean_configuration(
    make_postfix: Callable[..., PostfixInstance], make_sink: Callable[..., Sink]
) -> None:
    sink = make_sink()
    pf = make_postfix(sink_port=sink.port)
    assert pf.config_warnings() == []
    # The harness routes exactly what the sysadmin's map lists, via its next hop.
    assert pf.supervised == ("support@example.com", "billing@example.com")
    assert FILTER_NEXTHOP in (CONTRIB / "casegate_transport").read_text()
    assert f"casegate:[127.0.0.1]:{pf.filter_port}" in pf.transport_map()


@pytest.mark.parametrize(
    ("name", "old", "new"),
    [
        ("master.cf", "127.0.0.1:10026 inet", "127.0.0.1:2526 inet"),
        ("main.cf", "#smtpd_milters = { inet:127.0.0.1:10027,", "#smtpd_milters = unix:/m"),
        ("main.cf", "hash:/etc/postfix/casegate_recipients", "hash:/etc/casegate_gate"),
        ("casegate_transport", "casegate:[127.0.0.1]:10025", "casegate:[::1]:10025"),
        ("casegate_recipients", "casegate_gate", "casegate_check"),
        ("main.cf", "regexp:/etc/postfix/casegate_header_checks", "regexp:/etc/postfix/hc"),
        ("master.cf", "  -o smtp_header_checks=\n", "\n"),
        ("casegate_header_checks", "/^X-Casegate-Auth:/", "/^X-Auth:/"),
    ],
)
def test_a_contrib_file_that_drifted_from_the_harness_fails_loudly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, old: str, new: str
) -> None:
    copy = tmp_path / "contrib"
    shutil.copytree(CONTRIB, copy)
    (copy / name).write_text((copy / name).read_text().replace(old, new))
    monkeypatch.setattr(postfix, "CONTRIB", copy)
    pf = PostfixInstance(root=tmp_path / "pf", sink_port=1)
    with pytest.raises(ContribDrift, match=re.escape(name)):
        pf.main_cf()
        pf.master_cf()
        pf.transport_map()
        pf.recipients_map()
        pf.header_checks()


def test_supervised_mail_passes_the_filter_once(setup: Callable[..., Setup]) -> None:
    pf, nf, sink = setup()
    qid = pf.send(CUSTOMER, ["support@example.com"], message("passes the filter once"))

    # Postfix logged the outside client under that queue ID ...
    pf.wait_for_log(rf"{qid}: client=unknown\[127\.0\.0\.2\]")
    # ... and XFORWARD carried both to the filter.
    [t] = nf.wait_for(timeout=10)
    assert t.xforward["ADDR"] == "127.0.0.2"
    assert t.xforward["IDENT"] == qid
    assert t.rcpt_tos == ("support@example.com",)
    assert t.reinjected_as and t.reinjected_as != qid

    # Re-injected through the filter-free listener, to the sink, exactly once.
    [d] = sink.wait_for(timeout=10)
    assert d.rcpt_tos == ("support@example.com" + REINJECT_SUFFIX,)
    assert d.message["Subject"] == "passes the filter once"
    pf.wait_queue_empty(timeout=10)
    assert len(nf.transactions()) == 1 and len(sink.messages()) == 1
    log = pf.maillog()
    new = t.reinjected_as
    # The re-injection listener logs the original queue ID (XFORWARD IDENT) ...
    assert re.search(rf"casegate-reinject/smtpd\[\d+\]: {new}: .*orig_queue_id={qid}", log)
    # ... the first queue ID went to the filter, the second one to the sink only.
    to_filter = r"postfix/casegate/smtp\[\d+\]: (\w+): to="
    assert re.findall(to_filter, log) == [qid], "second pass through the filter"
    assert re.search(rf"postfix/smtp\[\d+\]: {new}: .*:{sink.port},.*status=sent", log)


def test_extension_addresses_reach_the_filter_one_recipient_at_a_time(
    setup: Callable[..., Setup],
) -> None:
    pf, nf, sink = setup()
    rcpts = ["support+CS0000123@example.com", "support+bounce-x@example.com", "billing@example.com"]
    qid = pf.send(CUSTOMER, rcpts, message("extensions and recipient limit"))

    found = nf.wait_for(count=3, timeout=10)
    # casegate_destination_recipient_limit = 1: one transaction per recipient.
    assert sorted(t.rcpt_tos for t in found) == sorted((r,) for r in rcpts)
    assert {t.xforward["IDENT"] for t in found} == {qid}
    sink.wait_for(count=3, timeout=10)
    pf.wait_queue_empty(timeout=10)


def test_staff_mailbox_goes_to_the_sink_directly(setup: Callable[..., Setup]) -> None:
    pf, nf, sink = setup()
    qid = pf.send(
        CUSTOMER, ["alice@example.com", "support@example.com"], message("staff and support")
    )

    direct = sink.wait_for(lambda d: d.rcpt_tos == ("alice@example.com",), timeout=10)
    assert len(direct) == 1
    [t] = nf.wait_for(timeout=10)
    assert t.rcpt_tos == ("support@example.com",)  # only the supervised address
    sink.wait_for(count=2, timeout=10)
    pf.wait_queue_empty(timeout=10)
    assert len(nf.transactions()) == 1
    assert re.search(
        rf"postfix/smtp\[\d+\]: {qid}: to=<alice@example.com>.*:{sink.port},.*status=sent",
        pf.maillog(),
    )


def test_an_address_added_to_the_map_is_routed_after_postmap_and_reload(
    setup: Callable[..., Setup],
) -> None:
    pf, nf, sink = setup()
    pf.send(CUSTOMER, ["sales@example.com"], message("sales before"))
    sink.wait_for(lambda d: d.rcpt_tos == ("sales@example.com",), timeout=10)
    assert nf.transactions() == []

    pf.set_supervised([*pf.supervised, "sales@example.com"])  # postmap + postfix reload
    qid = pf.send(CUSTOMER, ["sales@example.com"], message("sales after"))
    [t] = nf.wait_for(timeout=10)
    assert t.rcpt_tos == ("sales@example.com",) and t.xforward["IDENT"] == qid


def test_451_defers_until_the_filter_recovers_and_the_queue_is_flushed(
    setup: Callable[..., Setup],
) -> None:
    pf, nf, sink = setup(extra_main=NO_RETRY)
    nf.fail_with = TEMPFAIL
    qid = pf.send(CUSTOMER, ["support@example.com"], message("deferred by a 451"))

    pf.wait_for_log(rf"{qid}: to=<support@example.com>.*status=deferred .*451 4\.3\.0")
    pf.wait_deferred(qid)
    assert pf.queue_ids() == [qid]
    assert sink.messages() == []

    nf.fail_with = None
    pf.flush()
    [d] = sink.wait_for(timeout=10)
    assert d.message["Subject"] == "deferred by a 451"
    pf.wait_queue_empty(timeout=10)
    replies = [t.reply[:3] for t in nf.transactions()]
    assert replies[0] == "451" and replies[-1] == "250" and replies.count("250") == 1


def test_dead_filter_defers_and_flush_drains_after_restart(
    setup: Callable[..., Setup], make_nullfilter: Callable[..., NullFilter]
) -> None:
    pf, nf, sink = setup(extra_main=NO_RETRY)
    nf.stop()
    qid = pf.send(CUSTOMER, ["support@example.com"], message("filter down"))

    pf.wait_for_log(rf"{qid}: to=<support@example.com>.*status=deferred .*Connection refused")
    pf.wait_deferred(qid)
    assert pf.queue_ids() == [qid]

    revived = make_nullfilter(pf.reinject_port, port=pf.filter_port)
    pf.flush()  # also forgets that the destination was dead
    [t] = revived.wait_for(timeout=10)
    assert t.xforward["IDENT"] == qid
    sink.wait_for(timeout=10)
    pf.wait_queue_empty(timeout=10)


@pytest.mark.skipif(sasl_missing() is not None, reason=str(sasl_missing()))
def test_sasl_login_on_submission(setup: Callable[..., Setup]) -> None:
    port = free_port()
    pf, _, sink = setup(submission_port=port, sasl_users={"carol@example.com": "carols secret"})
    pf.add_sasl_user("dave@example.com", "daves secret")  # a user made by the test, live
    assert pf.config_warnings() == []

    # No AUTH in the clear: the block asks for STARTTLS first.
    with smtplib.SMTP("127.0.0.1", port, source_address=("127.0.0.2", 0), timeout=10) as s:
        s.ehlo()
        assert not s.has_extn("auth")
        assert s.has_extn("starttls")

    qid = pf.submit(("dave@example.com", "daves secret"), "dave@example.com",
                    [CUSTOMER], message("csr reply", to=CUSTOMER))  # fmt: skip
    pf.wait_for_log(rf"{qid}: client=unknown\[127\.0\.0\.2\], .*sasl_username=dave@example\.com")
    sink.wait_for(lambda d: d.rcpt_tos == (CUSTOMER,), timeout=10)

    with pytest.raises(smtplib.SMTPAuthenticationError) as err:
        pf.submit(("carol@example.com", "wrong"), "carol@example.com", [CUSTOMER],
                  message("wrong password", to=CUSTOMER))  # fmt: skip
    assert err.value.smtp_code == 535
    # Without a login, relaying to the outside is refused.
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send_message("127.0.0.1", port, "x@outside.test", [CUSTOMER], message("no login"),
                     starttls=True)  # fmt: skip


def test_dead_milter_holds_supervised_recipients_only(setup: Callable[..., Setup]) -> None:
    nobody = free_port()  # nothing listens there: the milter (and its gate) is "down"
    pf, nf, sink = setup(milter=f"inet:127.0.0.1:{nobody}")
    assert pf.config_warnings() == []

    # The gate: the supervised recipient is told to retry, at RCPT TO.
    with pytest.raises(smtplib.SMTPRecipientsRefused) as err:
        pf.send(CUSTOMER, ["support@example.com"], message("milter down"))
    ((code, text),) = err.value.recipients.values()
    assert code == 451 and text.startswith(b"4.3.0")
    pf.wait_for_log(rf"connect to Milter service inet:127\.0\.0\.1:{nobody}: Connection refused")
    pf.wait_for_log(r"reject: RCPT from unknown\[127\.0\.0\.2\]: 451 4\.3\.0 <support@example\.com>")
    # Everyone else's mail is none of casegate's business: accepted (default_action=accept).
    pf.send(CUSTOMER, ["staff@example.com"], message("to staff while the milter is down"))
    sink.wait_for(lambda d: d.rcpt_tos == ("staff@example.com",), timeout=10)

    # The re-injection listener has no milters: casegate's own mail still flows.
    qid = send_message("127.0.0.1", pf.reinject_port, "support@example.com", [CUSTOMER],
                       message("reinjected while the milter is down", to=CUSTOMER),
                       source_address=None)  # fmt: skip
    sink.wait_for(lambda d: d.rcpt_tos == (CUSTOMER,), timeout=10)
    assert qid in pf.maillog()
    assert nf.transactions() == []
