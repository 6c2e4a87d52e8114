"""Which product a new case is about (issue 10, section 6). Pure.

A keyword in the subject names a product (a whole word or phrase, any case;
the product's name is one of its keywords), else the product of the mailbox
the mail came to, else none. A keyword wins over the mailbox: it is the more
specific of the two (products@ may take mail about every product). Of
several keywords in one subject the earliest wins; at the same place, the
longer one ("Router Pro" over "Router").
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from rules.decision import ProductInfo, base_address


@lru_cache(maxsize=512)
def _word(keyword: str) -> re.Pattern[str]:
    words = r"\s+".join(re.escape(w) for w in keyword.split())
    return re.compile(rf"(?<!\w){words}(?!\w)", re.IGNORECASE)


def product_for(mailbox: str, subject: str, products: Iterable[ProductInfo]) -> tuple[str, str] | None:
    """(product name, why) for a new case, or None."""
    found: list[tuple[int, int, str, str]] = []
    by_mailbox: ProductInfo | None = None
    key = base_address(mailbox)
    for p in products:
        if p.mailbox and base_address(p.mailbox) == key and by_mailbox is None:
            by_mailbox = p
        for keyword in dict.fromkeys((p.name, *p.keywords)):
            if not keyword.strip():
                continue
            m = _word(keyword.strip()).search(subject or "")
            if m is not None:
                found.append((m.start(), -len(m.group(0)), p.name, keyword))
    if found:
        _, _, name, keyword = min(found)
        return name, f"keyword {keyword!r} in the subject"
    if by_mailbox is not None:
        return by_mailbox.name, f"the product of {key}"
    return None
