"""How much of a message's shape the rules look at: the one place for the limits.

A message must not cost seconds of CPU or hundreds of MB because of its
shape (issue 8: a 2 KB From: of nested comments overflowing the stack, a
30 MB HTML reply, a 1 MB Subject, 10,000 attachments). Beyond these limits
the message is still handled, never dropped or deferred: the part beyond the
limit is cut or left as opaque text, ``Inbound.defects`` says what was cut,
and the engine stores the raw bytes as they arrived, whatever was cut here.

Sizes are in characters of the parsed message (one character per byte for
8-bit data, which the parser keeps as surrogate escapes).

Pure: constants only.
"""

from __future__ import annotations

from typing import Final

# -- headers (of the message and of each MIME part) --------------------------

#: Header fields of one message or part; further fields are ignored, except
#: those in ``ESSENTIAL_HEADERS`` (up to ``MAX_SAME_FIELD`` each).
MAX_HEADER_FIELDS: Final = 1000

#: Fields of one name (Received: is the one that legitimately repeats; Postfix
#: itself bounces at 50 Received: lines, ``hopcount_limit``).
MAX_SAME_FIELD: Final = 100

#: Characters of one header field, unfolded; the rest is cut. Postfix's own
#: ``header_size_limit`` is 102,400 bytes. 64 KiB holds a Cc: of about 1,500
#: addresses or References: of about 800 Message-IDs.
MAX_FIELD_CHARS: Final = 65_536

#: Characters of all the kept header fields of one message or part; further
#: fields are ignored (except ``ESSENTIAL_HEADERS``).
MAX_HEADER_CHARS: Final = 1_048_576

#: Characters of a field value handed to the stdlib's structured header
#: parser (``email.headerregistry``), which costs about 25 µs per word: a
#: Subject:, an address list, a Content-Type:. Rules read the start of a
#: field; the stored subject is cut at 998 characters anyway.
MAX_PARSED_CHARS: Final = 4096

#: Characters of an address header read for addresses (From:, Cc:, ...) and
#: the number of addresses taken from one header name.
MAX_ADDRESS_CHARS: Final = 65_536
MAX_ADDRESSES: Final = 1000

#: Values of one header name that a rule reads (Precedence:, X-Loop:, ...).
MAX_VALUES_READ: Final = 10

#: Nesting of RFC 5322 comments ``(a (b (c)))``. The stdlib parsers recurse
#: once or twice per level and overflow the stack at about 450; a deeper
#: field has its comments removed before it is parsed.
MAX_COMMENT_DEPTH: Final = 10

#: Headers kept whatever the counts above: what the rules and the engine read.
ESSENTIAL_HEADERS: Final = frozenset(
    {
        "from", "sender", "reply-to", "to", "cc", "subject", "date", "message-id",
        "in-reply-to", "references", "return-path", "mime-version", "content-type",
        "content-transfer-encoding", "content-disposition", "content-id",
        "auto-submitted", "precedence", "list-id", "x-loop", "casegate-loop",
        "x-casegate-auth", "x-auto-response-suppress",
    }
)

# -- MIME structure -----------------------------------------------------------

#: MIME parts (containers and leaves) of one message. Beyond it the message is
#: opaque: headers read, body kept as one text part, no files.
MAX_MIME_PARTS: Final = 1000

#: Nesting of multiparts and attached messages. Beyond it: opaque.
MAX_MIME_DEPTH: Final = 30

# -- text ---------------------------------------------------------------------

#: Characters of HTML given to the HTML tree builder (quote stripping, text
#: conversion), which costs about 0.5 s per MiB of ordinary mail and up to
#: 3 s per MiB of bare tags (10 µs an element). The rest of a longer HTML
#: part is converted by stripping tags (linear, cheap); a reply's new text
#: is at the top, in the part the tree builder reads.
MAX_HTML_CHARS: Final = 262_144

#: Characters of text returned by ``rules.quotes.body_text`` and handed to the
#: reply extractor. A reply's new text is at the top, so a cut keeps it.
MAX_TEXT_CHARS: Final = 1_048_576

#: Characters of body kept as the single text part of an opaque message.
MAX_OPAQUE_CHARS: Final = 1_048_576
