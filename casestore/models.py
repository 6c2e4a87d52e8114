"""The case store's tables.

The models are bound to a database by :class:`casestore.store.Store`; they
hold no connection of their own. Timestamps are timezone-aware UTC, stored
as naive UTC (the clock is injected; see ``Store``).

Schema changes come with a migration in ``casestore/migrations`` (peewee's
``playhouse.migrations`` runner); ``casegate init`` applies them.
"""

from __future__ import annotations

from peewee import (
    SQL,
    BlobField,
    BooleanField,
    CharField,
    DateTimeField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)

from rules import defaults
from rules.vocab import Status


class BaseModel(Model):
    class Meta:
        legacy_table_names = False


class Pool(BaseModel):
    """A group of CSRs that serves one or more supervised addresses."""

    name = CharField(max_length=64, unique=True)
    rule = CharField(max_length=32, default=defaults.POOL_RULE)
    created = DateTimeField()
    # What a customer's mail to a closed case does: reopen | new_linked | new_linked_after:N
    closed_policy = CharField(max_length=32, default=defaults.CLOSED_POLICY)
    close_on_reply = BooleanField(default=defaults.CLOSE_ON_REPLY)
    remind_after = IntegerField(null=True, default=defaults.REMIND_AFTER)  # seconds; NULL: off
    autoclose_after = IntegerField(null=True, default=defaults.AUTOCLOSE_AFTER)
    unassigned_notify = CharField(max_length=320, default="")  # told once per case nobody took
    last_assigned = IntegerField(null=True)  # the CSR id round_robin gave the last case to
    escalation_notice = BooleanField(default=False)  # tell the customer when a case is escalated
    # Intake (migration 0014): the CSR's answer goes to the participants in Cc
    # too; at most max_participants Cc's per case become participants.
    cc_participants = BooleanField(default=defaults.CC_PARTICIPANTS)
    max_participants = IntegerField(default=defaults.MAX_PARTICIPANTS)
    # Templates (migration 0013): the built-ins' language, whether a new case
    # is acknowledged, the greeting line ("" = the language's), text-only mail.
    language = CharField(max_length=8, default="en")
    acknowledge = BooleanField(default=True)
    greeting = CharField(max_length=200, default="")
    text_only = BooleanField(default=False)
    resolve_within = IntegerField(null=True)  # seconds from opening to closing (reports); NULL: no target


class Mailbox(BaseModel):
    """A supervised address (support@, billing@ …)."""

    address = CharField(max_length=320, unique=True)
    pool = ForeignKeyField(Pool, backref="mailboxes", on_delete="RESTRICT")
    display_name = CharField(max_length=200, default="")
    created = DateTimeField()
    # Intake (migration 0014): a new case's subject must start with this
    # (""=any); what a sender unknown to this mailbox gets: open|reject|hold.
    subject_prefix = CharField(max_length=200, default="")
    unknown_policy = CharField(max_length=8, default=defaults.UNKNOWN_POLICY)
    # Templates (migration 0015): the mailbox's own language, acknowledgement
    # and greeting; NULL: its pool's.
    language = CharField(max_length=8, null=True)
    acknowledge = BooleanField(null=True)
    greeting = CharField(max_length=200, null=True)


class Csr(BaseModel):
    address = CharField(max_length=320, unique=True)
    name = CharField(max_length=200)
    signature = TextField(default="")
    available = BooleanField(default=True)
    created = DateTimeField()
    needs_approval = BooleanField(default=False)  # answers held for the supervisor
    supervisor = CharField(max_length=320, default="")
    # A footer under the CSR's answers (migration 0013): HTML, and one image
    # it shows by ``cid:footer`` (sent inline, never linked).
    footer_html = TextField(default="")
    footer_image = BlobField(null=True)
    footer_image_type = CharField(max_length=100, default="")
    footer_image_name = CharField(max_length=200, default="")


class Membership(BaseModel):
    csr = ForeignKeyField(Csr, backref="memberships", on_delete="CASCADE")
    pool = ForeignKeyField(Pool, backref="memberships", on_delete="CASCADE")
    level = IntegerField(default=1)  # 1: first line (gets new cases); 2: escalation
    priority = IntegerField(default=1)  # the order in which the CSR pulls from their pools (1 first)
    # Away in this pool (until away_until, when set): no new cases; the
    # deputy, if any, is told about the CSR's cases meanwhile.
    away = BooleanField(default=False)
    away_until = DateTimeField(null=True)
    deputy = CharField(max_length=320, default="")

    class Meta:
        indexes = ((("csr", "pool"), True),)


class Case(BaseModel):
    # number is derived from the id (prefix + 7 digits) and set in the same
    # transaction that inserts the row: numbers come from the database.
    number = CharField(max_length=32, unique=True, null=True)
    mailbox = ForeignKeyField(Mailbox, backref="cases", on_delete="RESTRICT")
    customer_address = CharField(max_length=320, index=True)
    customer_name = CharField(max_length=200, default="")
    subject = TextField(default="")
    # status, assignee, created: no index of their own, each leads one below (0021_lighter_writes)
    status = CharField(max_length=32, default=Status.RECEIVED.value)  # rules.vocab.Status
    assignee = ForeignKeyField(Csr, null=True, backref="cases", on_delete="SET NULL", index=False)
    created = DateTimeField()  # case list --since / --sort created
    updated = DateTimeField()
    closed = DateTimeField(null=True)
    follow_up_of = ForeignKeyField("self", null=True, backref="follow_ups", on_delete="SET NULL")
    rating = IntegerField(null=True)  # the customer's survey answer, 1-5
    rating_comment = TextField(default="")
    answers = TextField(default="")  # the closing questionnaire's answers, JSON {name: value}
    product = CharField(max_length=64, default="")  # a Product's name (kept if it is removed)
    # When our first answer (a reply or proposed solution) was stored; NULL
    # while none was (reports; kept by Store.note_first_answer, 0016_report_facts).
    first_answer_at = DateTimeField(null=True)

    class Meta:
        table_name = "support_case"  # "case" is an SQL keyword
        indexes = (
            (("closed",), False),  # reports (casestore.reports)
            # reports, 0016_report_facts: the opened and closed passes and the backlog, covering
            (("created", "assignee", "mailbox", "product", "first_answer_at"), False),
            (("status", "closed", "created", "assignee", "mailbox", "product", "rating", "id"), False),
            # reports, 0017_report_keys: every case's grouping key, in key order
            (("assignee", "mailbox", "product", "id"), False),
            (("assignee", "status"), False),  # Store.open_load: a CSR's open cases (0020)
        )


class Question(BaseModel):
    """A closing question of a pool: answered on #close (``#close product=Router``)."""

    pool = ForeignKeyField(Pool, backref="questions", on_delete="CASCADE")
    name = CharField(max_length=64)
    choices = TextField(default="")  # comma-separated; empty with free_text: any answer
    required = BooleanField(default=False)
    free_text = BooleanField(default=False)  # answers outside the choices are fine
    created = DateTimeField()

    class Meta:
        indexes = ((("pool", "name"), True),)


class Participant(BaseModel):
    """Everyone who may write on a case by tag: the customer and CCs."""

    case = ForeignKeyField(Case, backref="participants", on_delete="CASCADE", index=False)  # (case, address)
    address = CharField(max_length=320)
    role = CharField(max_length=16, default="customer")

    class Meta:
        indexes = ((("case", "address"), True),)


class Message(BaseModel):
    """Every message in or out, with its raw bytes exactly as received or sent."""

    case = ForeignKeyField(Case, null=True, backref="messages", on_delete="CASCADE",
                           index=False)  # (case, kind, created) below
    direction = CharField(max_length=3)  # "in" | "out"
    # in: customer | csr | automatic | bounce ; out: ack | notify | reply
    kind = CharField(max_length=16)
    sender = CharField(max_length=320, default="")
    recipients = TextField(default="")  # comma-separated envelope recipients
    message_id = CharField(max_length=998, default="", index=True)
    in_reply_to = TextField(default="")
    subject = TextField(default="")
    text = TextField(default="")  # the readable new text (quotes stripped for replies)
    raw = BlobField()
    queue_id = CharField(max_length=32, default="")
    client_addr = CharField(max_length=64, default="")
    authenticated = CharField(max_length=200, default="")  # how a CSR was proven
    automatic = CharField(max_length=200, default="")  # the loop rule that fired
    dkim = CharField(max_length=500, default="")  # e.g. "pass:example.com fail:other.test"
    created = DateTimeField()
    # Outgoing mail: the recipient as the rate caps count it (plus-tag and
    # case stripped), and its domain.
    rcpt_key = CharField(max_length=320, default="")
    rcpt_domain = CharField(max_length=255, default="")

    class Meta:
        # The rate caps count our automatic mail per recipient and domain, and per case.
        indexes = (
            (("case", "kind", "created"), False),
            # covering for the count per domain (and mailbox) of Store.automatic_sent_to
            (("rcpt_domain", "created", "direction", "kind", "rcpt_key"), False),
            (("kind", "created", "case"), False),  # reports: e-mails received in a period (covering)
        )


class Attachment(BaseModel):
    message = ForeignKeyField(Message, backref="attachments", on_delete="CASCADE")
    filename = CharField(max_length=255, default="")
    content_type = CharField(max_length=255, default="application/octet-stream")
    size = IntegerField()
    sha256 = CharField(max_length=64)
    data = BlobField()
    inline = BooleanField(default=False)  # Content-Disposition inline / a cid-only part
    content_id = CharField(max_length=255, default="")  # without <>


class Product(BaseModel):
    """A product a case is about: from its mailbox, or a keyword in the subject."""

    name = CharField(max_length=64, unique=True)
    mailbox = CharField(max_length=320, default="")  # every case of this mailbox ("" none)
    keywords = TextField(default="")  # comma-separated words matched in a new case's subject
    created = DateTimeField()


class Event(BaseModel):
    case = ForeignKeyField(Case, null=True, backref="events", on_delete="CASCADE")
    message = ForeignKeyField(Message, null=True, backref="events", on_delete="SET NULL")
    at = DateTimeField(index=True)
    kind = CharField(max_length=32)
    actor = CharField(max_length=320, default="")
    detail = TextField(default="")

    class Meta:
        indexes = ((("kind", "at"), False),)  # reports: reopenings in a period


class Delivery(BaseModel):
    """One hand-over from Postfix; the key makes processing idempotent."""

    key = CharField(max_length=64, unique=True)
    queue_id = CharField(max_length=32, default="")
    received = DateTimeField()
    outcome = CharField(max_length=32)
    message = ForeignKeyField(Message, null=True, on_delete="SET NULL")


# reports, 0016_report_facts: reopenings only (LIKE on SQLite, ILIKE on PostgreSQL)
Event.add_index(Event.index(Event.kind, Event.at, Event.case, name="event_reopened",
                            where=SQL("kind = 'status' AND detail LIKE 'closed -> %'")))


class Outbox(BaseModel):
    """Outgoing mail waiting for re-injection into Postfix.

    The message (with its final bytes and Message-ID) is stored before it is
    sent, so a re-send after a crash is the same message.
    """

    message = ForeignKeyField(Message, backref="outbox", on_delete="CASCADE")
    mail_from = CharField(max_length=320)
    rcpt_to = TextField()  # comma-separated
    status = CharField(max_length=8, default="pending", index=True)  # pending|sent|failed
    attempts = IntegerField(default=0)
    next_attempt = DateTimeField(index=True)
    lease_until = DateTimeField(null=True)
    lease_owner = CharField(max_length=128, default="")  # host:pid of the sender
    last_error = TextField(default="")
    sent = DateTimeField(null=True)


class BlacklistEntry(BaseModel):
    """An address or ``@domain``, optionally only with a subject regex."""

    pattern = CharField(max_length=320)
    subject = CharField(max_length=500, null=True)
    reason = CharField(max_length=500, default="")
    created = DateTimeField()
    created_by = CharField(max_length=320, default="")

    class Meta:
        indexes = ((("pattern", "subject"), True),)


class Department(BaseModel):
    """A team a CSR consults by mail (#consult NAME); its answers stay internal."""

    name = CharField(max_length=64, unique=True)
    address = CharField(max_length=320, unique=True)
    deadline = IntegerField(default=2 * 86400)  # seconds to answer before the overdue notices
    created = DateTimeField()


class Consultation(BaseModel):
    case = ForeignKeyField(Case, backref="consultations", on_delete="CASCADE")
    department = ForeignKeyField(Department, backref="consultations", on_delete="CASCADE")
    question = TextField(default="")
    asked_by = CharField(max_length=320, default="")
    status = CharField(max_length=12, default="open")  # open | answered | overdue
    asked = DateTimeField()
    due = DateTimeField()
    answered = DateTimeField(null=True)

    class Meta:
        indexes = ((("status", "due"), False), (("asked",), False))  # asked: reports


class Draft(BaseModel):
    """A held answer of a CSR who needs approval: the commands and text as given."""

    case = ForeignKeyField(Case, backref="drafts", on_delete="CASCADE")
    csr = CharField(max_length=320)
    supervisor = CharField(max_length=320, default="")
    commands = TextField(default="")  # "#close product=Router", or "" for a plain answer
    text = TextField(default="")
    status = CharField(max_length=12, default="pending")  # pending | approved | rejected

    created = DateTimeField()
    decided = DateTimeField(null=True)
    decided_by = CharField(max_length=320, default="")

    class Meta:
        indexes = ((("status",), False),)


class Timer(BaseModel):
    """Something due on a case at a time (rules.vocab.TimerKind); claimed with
    a lease like the outbox, so with several hosts each fires once."""

    case = ForeignKeyField(Case, backref="timers", on_delete="CASCADE", index=False)  # (case, kind, status)
    kind = CharField(max_length=32)
    due = DateTimeField()
    status = CharField(max_length=12, default="pending")  # pending | done | cancelled
    attempts = IntegerField(default=0)
    lease_until = DateTimeField(null=True)
    lease_owner = CharField(max_length=128, default="")
    created = DateTimeField()
    fired = DateTimeField(null=True)
    last_error = TextField(default="")

    class Meta:
        indexes = ((("status", "due"), False), (("case", "kind", "status"), False))


class Quarantine(BaseModel):
    """A delivery whose processing failed (a bug its content triggers): after
    ``defaults.QUARANTINE_AFTER`` attempts it is kept here whole and answered
    250, so Postfix stops retrying; never bounced, lost or silently dropped."""

    key = CharField(max_length=64, unique=True)  # the delivery's idempotency key
    queue_id = CharField(max_length=32, default="")
    mail_from = CharField(max_length=320, default="")
    rcpt_to = TextField(default="")  # newline-separated
    client_addr = CharField(max_length=64, default="")
    raw = BlobField()
    attempts = IntegerField(default=0)
    error = TextField(default="")
    status = CharField(max_length=12, default="failing")  # failing | held | released | dropped
    first_seen = DateTimeField()
    last_seen = DateTimeField()

    class Meta:
        indexes = ((("status", "last_seen"), False),)


class Setting(BaseModel):
    """Settings an admin changes at run time (rate caps …), shared by every host."""

    key = CharField(max_length=64, primary_key=True)
    value = CharField(max_length=500)


MODELS: tuple[type[BaseModel], ...] = (
    Pool,
    Mailbox,
    Csr,
    Membership,
    Case,
    Question,
    Participant,
    Message,
    Attachment,
    Event,
    Delivery,
    Outbox,
    BlacklistEntry,
    Department,
    Consultation,
    Draft,
    Timer,
    Quarantine,
    Setting,
    Product,
)
