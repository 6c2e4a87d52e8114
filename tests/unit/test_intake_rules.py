"""Pure intake rules (issue 10, sections 5-6): who joins a case, which
product a case is about, what a mailbox's intake policy does. Tables."""

from __future__ import annotations

import pytest

from rules.decision import CsrInfo, DepartmentInfo, Directory, MailboxInfo, PoolInfo
from rules.participants import joining

POOL = PoolInfo("default")
DIRECTORY = Directory(
    csrs={"jane@example.com": CsrInfo("jane@example.com", "Jane")},
    mailboxes={"support@example.com": MailboxInfo("support@example.com", "", POOL)},
    departments={"legal": DepartmentInfo("legal", "legal@example.com", 3600)},
)

JOINING = [
    # (what, cc, known, limit, added, refused addresses)
    ("a new colleague joins", ["carol@c.test"], {"ann@c.test"}, 10, ("carol@c.test",), ()),
    ("case and duplicates folded", ["Carol@C.test", "carol@c.test"], {"ann@c.test"}, 10,
     ("carol@c.test",), ()),
    ("the sender is not added twice", ["ann@c.test"], {"ann@c.test"}, 10, (), ()),
    ("already taking part (a +tag of them too)", ["bob@c.test", "bob+x@c.test"],
     {"ann@c.test", "bob@c.test"}, 10, (), ()),
    ("a CSR never joins", ["jane@example.com", "jane+tag@example.com"], {"ann@c.test"}, 10, (),
     ("jane@example.com", "jane+tag@example.com")),
    ("a supervised address or a department never joins",
     ["support@example.com", "support+CS0000001@example.com", "legal@example.com"], {"ann@c.test"}, 10,
     (), ("support@example.com", "support+cs0000001@example.com", "legal@example.com")),
    ("role addresses never join", ["noreply@c.test", "mailer-daemon@c.test"], {"ann@c.test"}, 10, (),
     ("noreply@c.test", "mailer-daemon@c.test")),
    ("an address literal never joins", ["x@[192.0.2.1]"], {"ann@c.test"}, 10, (), ("x@[192.0.2.1]",)),
    ("the cap counts those on the case already", ["c@c.test", "d@c.test"],
     {"ann@c.test", "b@c.test"}, 2, ("c@c.test",), ("d@c.test",)),
    ("a cap of 0 takes nobody", ["c@c.test"], {"ann@c.test"}, 0, (), ("c@c.test",)),
]


@pytest.mark.parametrize("cc, known, limit, added, refused", [c[1:] for c in JOINING],
                         ids=[c[0] for c in JOINING])
def test_who_joins_a_case(cc, known, limit, added, refused) -> None:
    got = joining(cc, sender="ann@c.test", known=known, directory=DIRECTORY, limit=limit)
    assert got.added == added
    assert tuple(a for a, _ in got.refused) == refused
