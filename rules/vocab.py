"""casegate's vocabulary as types: statuses, message kinds, event kinds,
outcomes, timers and closed-case policies. Stored as their string values."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    """A case's life (docs/cases.md)."""

    RECEIVED = "received"  # new: nobody has answered yet
    IN_PROGRESS = "in_progress"  # a CSR answered or took it
    SOLUTION_PROPOSED = "solution_proposed"  # waiting for the customer's Accept/Reject
    UNDER_CONSULTATION = "under_consultation"  # reserved: a department is consulted
    CLOSED = "closed"
    REOPENED = "reopened"  # the customer wrote to a closed case (or rejected a solution)
    HELD = "held"  # an unknown customer's case waiting for a CSR's #accept (mailbox --unknown hold)

    @property
    def is_open(self) -> bool:
        return self is not Status.CLOSED


OPEN_STATUSES = tuple(s.value for s in Status if s.is_open)


class MessageKind(StrEnum):
    # in
    CUSTOMER = "customer"
    CSR = "csr"
    COMMAND = "command"  # a CSR's message that holds commands only
    AUTOMATIC = "automatic"
    BOUNCE = "bounce"
    RATING = "rating"  # a customer's answer to the survey
    DEPARTMENT = "department"  # a consulted department's answer (internal)
    # out
    ACK = "ack"
    NOTIFY = "notify"
    REPLY = "reply"
    SOLUTION = "solution"
    CLOSED = "closed"
    SURVEY = "survey"
    REMINDER = "reminder"
    THANKS = "thanks"
    ESCALATED = "escalated"  # to the customer: passed to a specialist
    CSR_NOTICE = "csr_notice"  # to a CSR: what a command did or why it did nothing
    CONSULT = "consult"  # to a department: a CSR's question
    OVERDUE = "overdue"  # to a department and a CSR: a consultation past its deadline
    APPROVAL = "approval"  # to a supervisor: a held answer, as the customer would get it
    REFUSED = "refused"  # to a sender: no case opened (the mailbox's intake policy)


# Outgoing mail to customers that nobody typed: RFC 3834 auto-replies, under
# the rate caps, never in answer to automatic mail.
AUTOMATIC_OUT = frozenset({MessageKind.ACK, MessageKind.CLOSED, MessageKind.SURVEY,
                           MessageKind.REMINDER, MessageKind.THANKS, MessageKind.ESCALATED,
                           MessageKind.REFUSED})
# What the customer's thread holds (threading headers of answers).
CUSTOMER_THREAD_OUT = frozenset({MessageKind.ACK, MessageKind.REPLY, MessageKind.SOLUTION,
                                 MessageKind.CLOSED, MessageKind.SURVEY, MessageKind.REMINDER,
                                 MessageKind.THANKS, MessageKind.ESCALATED})


class EventKind(StrEnum):
    OPENED = "opened"
    STATUS = "status"
    ASSIGNED = "assigned"
    UNASSIGNED = "unassigned"
    UNASSIGNED_NOTIFIED = "unassigned_notified"
    ESCALATED = "escalated"
    ANSWERED = "answered"  # the closing questionnaire
    CONSULTED = "consulted"
    HELD = "held"
    APPROVED = "approved"
    REJECTED = "rejected"
    CONSULTATION_ANSWERED = "consultation_answered"
    CONSULTATION_OVERDUE = "consultation_overdue"
    AWAY = "away"
    BACK = "back"
    CUSTOMER_REPLIED = "customer_replied"
    REPLIED = "replied"
    EMPTY_REPLY = "empty_reply"
    NOTE = "note"
    ACKNOWLEDGED = "acknowledged"
    NO_ACK = "no_ack"
    NOT_SENT = "not_sent"  # an automatic mail held back (rate cap, role address ...)
    MENTIONS = "mentions"
    FOLLOW_UP_OF = "follow_up_of"
    FOLLOW_UP_CREATED = "follow_up_created"
    RATED = "rated"
    SOLUTION_ACCEPTED = "solution_accepted"
    SOLUTION_REJECTED = "solution_rejected"
    COMMAND = "command"
    COMMAND_REFUSED = "command_refused"
    BLACKLISTED = "blacklisted"
    AUTOMATIC = "automatic"
    OWN_MAIL = "own_mail"
    BOUNCE_UNMATCHED = "bounce_unmatched"
    DELIVERY_FAILED = "delivery_failed"
    SEND_FAILED = "send_failed"
    REMINDED = "reminded"
    AUTOCLOSED = "autoclosed"
    TIMER = "timer"
    PARTICIPANTS = "participants"  # Cc's joined the case (or were refused)
    PRODUCT = "product"  # the case's product was set
    INTAKE_REFUSED = "intake_refused"  # no case: the mailbox's intake policy
    ACCEPTED = "accepted"  # a held case was accepted by a CSR


class Outcome(StrEnum):
    """What one event did, as the log line and the delivery row say it."""

    NEW_CASE = "new_case"
    APPENDED = "appended"
    REOPENED = "reopened"
    FOLLOW_UP = "follow_up"
    RATING = "rating"
    SOLUTION_ACCEPTED = "solution_accepted"
    SOLUTION_REJECTED = "solution_rejected"
    CSR_REPLY = "csr_reply"
    CSR_EMPTY_REPLY = "csr_empty_reply"
    CSR_COMMAND = "csr_command"
    CSR_COMMAND_REFUSED = "csr_command_refused"
    CSR_NO_CASE = "csr_no_case"
    PROACTIVE_CASE = "proactive_case"
    DEPARTMENT_ANSWER = "department_answer"
    HELD_FOR_APPROVAL = "held_for_approval"
    DEPARTMENT_NO_CASE = "department_no_case"
    NEW_CASE_AUTOMATIC = "new_case_automatic"
    AUTOMATIC_APPENDED = "automatic_appended"
    OWN_MAIL = "own_mail"
    BOUNCE_MATCHED = "bounce_matched"
    BOUNCE_UNMATCHED = "bounce_unmatched"
    DISCARDED_BLACKLIST = "discarded_blacklist"
    TIMER_FIRED = "timer_fired"
    TIMER_SKIPPED = "timer_skipped"
    INTAKE_REFUSED = "intake_refused"  # no case opened: subject prefix or unknown sender
    HELD_CASE = "held_case"  # opened as held for a CSR's #accept
    CASE_ACCEPTED = "case_accepted"


class TimerKind(StrEnum):
    REMIND = "remind"  # the customer has not answered our answer or solution
    AUTOCLOSE = "autoclose"  # ... for longer: close the case
    ASSIGN_RETRY = "assign_retry"  # nobody was available: try again
    CONSULT_DUE = "consult_due"  # a department's deadline


class ClosedPolicyKind(StrEnum):
    REOPEN = "reopen"
    NEW_LINKED = "new_linked"
    NEW_LINKED_AFTER = "new_linked_after"


@dataclass(frozen=True)
class ClosedPolicy:
    """What a customer's mail to a closed case does (per pool)."""

    kind: ClosedPolicyKind = ClosedPolicyKind.REOPEN
    days: int = 0  # for new_linked_after: reopen within this many days

    @classmethod
    def parse(cls, text: str) -> ClosedPolicy:
        """``reopen``, ``new_linked`` or ``new_linked_after:N``; ValueError otherwise."""
        value = (text or "").strip().lower()
        name, _, days = value.partition(":")
        if name == ClosedPolicyKind.NEW_LINKED_AFTER:
            if not re.fullmatch(r"[0-9]+", days) or int(days) < 1:
                raise ValueError(f"new_linked_after takes a number of days, e.g. new_linked_after:7,"
                                 f" not {text!r}")
            return cls(ClosedPolicyKind.NEW_LINKED_AFTER, int(days))
        if days:
            raise ValueError(f"unknown closed-case policy {text!r}")
        try:
            return cls(ClosedPolicyKind(name))
        except ValueError:
            raise ValueError(f"unknown closed-case policy {text!r}: use reopen, new_linked or "
                             "new_linked_after:DAYS") from None

    def __str__(self) -> str:
        return f"{self.kind}:{self.days}" if self.kind is ClosedPolicyKind.NEW_LINKED_AFTER \
            else str(self.kind)
