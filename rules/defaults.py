"""Every default in one place: what an installation gets until an admin says otherwise."""

from __future__ import annotations

# Rate caps on automatic mail to customers (acknowledgements, closing notices,
# surveys, reminders, thank-yous): `casegate limits set`, shared by hosts.
LIMIT_DEFAULTS: dict[str, int] = {
    "autoreply_per_recipient": 40,  # automatic mails to one mailbox (plus-tags ignored) ...
    # ... to one domain (forged victim1@, victim2@ …): high, since one consumer
    # domain (gmail.com) may send a big desk thousands of real customers a day ...
    "autoreply_per_domain": 5000,
    "autoreply_per_case": 10,  # ... and on one case ...
    "autoreply_window_hours": 24,  # ... within this many hours (Znuny: 40 a day)
}

# Per pool (`casegate pool set`).
POOL_RULE = "least_load"
CLOSED_POLICY = "reopen"
CLOSE_ON_REPLY = False
REMIND_AFTER = 3 * 86400  # seconds without the customer's answer before a reminder
AUTOCLOSE_AFTER = 14 * 86400  # ... before the case closes by itself

# The scheduler (`[serve] tick`, `serve --tick`).
TICK_SECONDS = 30.0
ASSIGN_RETRY_SECONDS = 300  # a case that found nobody is tried again this often
TIMER_LEASE_SECONDS = 120

# The filter.
QUARANTINE_AFTER = 5  # failed attempts at one delivery before it is held (and answered 250)
STAMP_MAX_AGE = 5 * 24 * 3600  # Postfix's default maximal_queue_lifetime
BLACKLIST_TTL = 5.0  # seconds; the milter refreshes its copy as often
DIRECTORY_TTL = 5.0  # seconds; serve re-reads mailboxes, pools and CSRs at least this often
HISTORY_LIMIT = 50  # earlier messages quoted in a notification or answer ...
HISTORY_MAX_CHARS = 64_000  # ... and at most this much of their text in all ...
HISTORY_ITEM_CHARS = 16_000  # ... and of any one of them
MESSAGE_TEXT_CHARS = 100_000  # the new message's text shown in a notification
FORWARD_FILES_BYTES = 5_000_000  # files attached to one outgoing mail (Postfix's limit is 10 MB)

# Intake (issue 10): participants, files, unknown customers.
CC_PARTICIPANTS = True  # a CSR's answer goes to the case's participants in Cc (per pool)
MAX_PARTICIPANTS = 10  # Cc's of customer mail that become participants of one case (per pool)
UNKNOWN_POLICY = "open"  # a sender new to a mailbox: open | reject | hold (per mailbox)
# Files of one message (all together), and of a whole case, that travel with
# a notification; larger ones stay stored and the CSR is told (config
# [files] message_max / case_max).
FILES_MESSAGE_MAX = FORWARD_FILES_BYTES
FILES_CASE_MAX = 50_000_000
