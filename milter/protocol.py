"""The Sendmail milter protocol (version 6) as pure bytes <-> typed values.

No I/O here. A frame on the wire is a 4-byte big-endian length, a 1-byte
command code and ``length - 1`` bytes of payload. Postfix (``milter8.c``) is
the MTA we talk to: it opens with ``SMFIC_OPTNEG``, sends ``SMFIC_MACRO``
before each event, and reads exactly one reply per event except where the
negotiated protocol says "no reply" (``SMFIP_NR_*``) and for ``ABORT``,
``QUIT`` and ``MACRO``, which never get one.

* :class:`FrameReader` cuts a byte stream into :class:`Frame` values.
* :func:`decode` turns a frame from the MTA into a command value;
  :func:`decode_response` does the same for frames from a milter (tests and
  tools use it).
* :func:`encode` turns any command or response value into one frame's bytes.

Everything malformed raises :class:`ProtocolError` and nothing else.

Strings travel as UTF-8 with ``surrogateescape``: 8-bit bytes that are not
UTF-8 survive a decode/encode round trip unchanged.

SMTP replies are typed so that a permanent code cannot go where a temporary
one is required: :class:`TempFailCode` only holds a 4xx
:class:`rules.replies.Reply`, :class:`RejectCode` only a 5xx one, and both
are checked the way Postfix checks ``SMFIR_REPLYCODE`` ("4XX 4.X.X text" or
"5XX 5.X.X text", the enhanced class matching the code).
"""

from __future__ import annotations

import enum
import re
import struct
from dataclasses import dataclass
from typing import ClassVar, Final, TypeAlias

from rules.replies import Reply

__all__ = [
    "MAX_FRAME_LENGTH",
    "MILTER_CHUNK_SIZE",
    "PROTOCOL_VERSION",
    "Abort",
    "Accept",
    "Action",
    "AddHeader",
    "Body",
    "ChangeHeader",
    "Command",
    "Connect",
    "Continue",
    "Data",
    "DefineMacro",
    "DeleteRecipient",
    "Discard",
    "EndOfHeaders",
    "EndOfMessage",
    "Family",
    "Frame",
    "FrameReader",
    "Header",
    "Helo",
    "InsertHeader",
    "MacroStage",
    "MailFrom",
    "OptNeg",
    "OptNegReply",
    "Progress",
    "ProtocolError",
    "Quit",
    "QuitNewConnection",
    "RcptTo",
    "Reject",
    "RejectCode",
    "ReplyCode",
    "Response",
    "Skip",
    "Step",
    "TempFail",
    "TempFailCode",
    "Unknown",
    "decode",
    "decode_response",
    "encode",
    "reply_code",
]

PROTOCOL_VERSION: Final = 6
MILTER_CHUNK_SIZE: Final = 65535
# Postfix sends body chunks of at most 64 KiB and headers of at most
# header_size_limit (100 KiB by default); anything past 1 MiB is not a milter
# frame but garbage or an attack.
MAX_FRAME_LENGTH: Final = 1 << 20

_U32 = struct.Struct("!I")
_U16 = struct.Struct("!H")


class ProtocolError(Exception):
    """Malformed or unexpected milter data. The only exception this module raises
    for bad input."""


# --------------------------------------------------------------------------
# Flags and enumerations (libmilter mfdef.h / mfapi.h)


class Action(enum.IntFlag):
    """``SMFIF_*``: the modifications a milter may request at end of message."""

    ADDHDRS = 0x001
    CHGBODY = 0x002
    ADDRCPT = 0x004
    DELRCPT = 0x008
    CHGHDRS = 0x010
    QUARANTINE = 0x020
    CHGFROM = 0x040
    ADDRCPT_PAR = 0x080
    SETSYMLIST = 0x100


class Step(enum.IntFlag):
    """``SMFIP_*``: events the milter does not want, replies it will not send."""

    NOCONNECT = 0x00000001
    NOHELO = 0x00000002
    NOMAIL = 0x00000004
    NORCPT = 0x00000008
    NOBODY = 0x00000010
    NOHDRS = 0x00000020
    NOEOH = 0x00000040
    NR_HDR = 0x00000080
    NOUNKNOWN = 0x00000100
    NODATA = 0x00000200
    SKIP = 0x00000400
    RCPT_REJ = 0x00000800
    NR_CONN = 0x00001000
    NR_HELO = 0x00002000
    NR_MAIL = 0x00004000
    NR_RCPT = 0x00008000
    NR_DATA = 0x00010000
    NR_UNKN = 0x00020000
    NR_EOH = 0x00040000
    NR_BODY = 0x00080000
    HDR_LEADSPC = 0x00100000
    MDS_256K = 0x10000000
    MDS_1M = 0x20000000


class MacroStage(enum.IntEnum):
    """``SMFIM_*``: where a requested macro list applies."""

    CONNECT = 0
    HELO = 1
    ENVFROM = 2
    ENVRCPT = 3
    DATA = 4
    EOM = 5
    EOH = 6


class Family(enum.Enum):
    """``SMFIA_*``: the client's address family in SMFIC_CONNECT."""

    UNKNOWN = "U"
    UNIX = "L"
    INET = "4"
    INET6 = "6"


# --------------------------------------------------------------------------
# Commands: MTA -> milter


@dataclass(frozen=True, slots=True)
class OptNeg:
    version: int
    actions: Action
    protocol: Step


@dataclass(frozen=True, slots=True)
class DefineMacro:
    """Macros for the event named by ``stage`` (a command code such as ``"M"``)."""

    stage: str
    macros: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Connect:
    hostname: str
    family: Family
    port: int = 0
    address: str = ""


@dataclass(frozen=True, slots=True)
class Helo:
    name: str


@dataclass(frozen=True, slots=True)
class MailFrom:
    address: str  # as sent, usually with angle brackets: "<a@b>" or "<>"
    args: tuple[str, ...] = ()  # ESMTP parameters, e.g. ("SIZE=123",)


@dataclass(frozen=True, slots=True)
class RcptTo:
    address: str
    args: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Data:
    pass


@dataclass(frozen=True, slots=True)
class Header:
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class EndOfHeaders:
    pass


@dataclass(frozen=True, slots=True)
class Body:
    chunk: bytes


@dataclass(frozen=True, slots=True)
class EndOfMessage:
    chunk: bytes = b""  # Sendmail may send the last body chunk here; Postfix does not


@dataclass(frozen=True, slots=True)
class Abort:
    pass


@dataclass(frozen=True, slots=True)
class Quit:
    pass


@dataclass(frozen=True, slots=True)
class QuitNewConnection:
    pass


@dataclass(frozen=True, slots=True)
class Unknown:
    line: str


Command: TypeAlias = (
    OptNeg
    | DefineMacro
    | Connect
    | Helo
    | MailFrom
    | RcptTo
    | Data
    | Header
    | EndOfHeaders
    | Body
    | EndOfMessage
    | Abort
    | Quit
    | QuitNewConnection
    | Unknown
)


# --------------------------------------------------------------------------
# Responses: milter -> MTA


@dataclass(frozen=True, slots=True)
class OptNegReply:
    """Our half of the negotiation, with the macros we want at each stage.

    Asking for a stage's macros replaces Postfix's default list for that
    stage, and once any list is sent every stage not listed gets none.
    """

    version: int
    actions: Action
    protocol: Step
    macros: tuple[tuple[MacroStage, tuple[str, ...]], ...] = ()

    def __post_init__(self) -> None:
        for _, names in self.macros:
            for name in names:
                if not name or any(c.isspace() or c == "\0" for c in name):
                    raise ValueError(f"bad macro name {name!r}")


@dataclass(frozen=True, slots=True)
class Continue:
    pass


@dataclass(frozen=True, slots=True)
class Accept:
    pass


@dataclass(frozen=True, slots=True)
class Reject:
    """Bare ``SMFIR_REJECT``: Postfix answers "550 5.7.1 Command rejected"."""


@dataclass(frozen=True, slots=True)
class TempFail:
    """Bare ``SMFIR_TEMPFAIL``: Postfix answers "451 4.7.1 Service unavailable"."""


@dataclass(frozen=True, slots=True)
class Discard:
    pass


@dataclass(frozen=True, slots=True)
class Progress:
    pass


@dataclass(frozen=True, slots=True)
class Skip:
    pass


_ENHANCED = re.compile(r"([245])\.\d{1,3}\.\d{1,3}")


def _check_reply(reply: Reply, klass: int) -> None:
    if reply.code // 100 != klass:
        raise ValueError(f"{reply.code} is not a {klass}xx reply")
    m = _ENHANCED.fullmatch(reply.enhanced)
    if m is None or int(m.group(1)) != klass:
        raise ValueError(f"enhanced status {reply.enhanced!r} does not fit a {klass}xx reply")
    if "\0" in reply.text or "\r" in reply.text or "\n" in reply.text:
        raise ValueError("reply text must be one line without NUL")


@dataclass(frozen=True, slots=True)
class TempFailCode:
    """``SMFIR_REPLYCODE`` with a 4xx reply: the only kind a temporary decision can be."""

    reply: Reply
    klass: ClassVar[int] = 4

    def __post_init__(self) -> None:
        _check_reply(self.reply, self.klass)


@dataclass(frozen=True, slots=True)
class RejectCode:
    """``SMFIR_REPLYCODE`` with a 5xx reply."""

    reply: Reply
    klass: ClassVar[int] = 5

    def __post_init__(self) -> None:
        _check_reply(self.reply, self.klass)


ReplyCode: TypeAlias = TempFailCode | RejectCode


def reply_code(reply: Reply) -> ReplyCode:
    """The right ``SMFIR_REPLYCODE`` type for a 4xx or 5xx reply (``ValueError`` otherwise)."""
    if reply.is_temporary:
        return TempFailCode(reply)
    if reply.is_permanent:
        return RejectCode(reply)
    raise ValueError(f"a milter reply code must be 4xx or 5xx, not {reply.code}")


def _check_header_name(name: str) -> None:
    if not name or any(ord(c) <= 32 or ord(c) >= 127 or c == ":" for c in name):
        raise ValueError(f"bad header name {name!r}")


def _check_no_nul(value: str) -> None:
    if "\0" in value:
        raise ValueError("NUL in a header value")


@dataclass(frozen=True, slots=True)
class AddHeader:
    name: str
    value: str

    def __post_init__(self) -> None:
        _check_header_name(self.name)
        _check_no_nul(self.value)


@dataclass(frozen=True, slots=True)
class InsertHeader:
    index: int  # 0 = at the top
    name: str
    value: str

    def __post_init__(self) -> None:
        _check_header_name(self.name)
        _check_no_nul(self.value)
        if not 0 <= self.index < 2**32:
            raise ValueError(f"header index out of range: {self.index}")


@dataclass(frozen=True, slots=True)
class ChangeHeader:
    """Replace the ``index``-th (1-based) header called ``name``; an empty value deletes it.

    Postfix counts only the headers still present, case-insensitively by name:
    to delete several occurrences, delete from the last to the first.
    """

    index: int
    name: str
    value: str = ""

    def __post_init__(self) -> None:
        _check_header_name(self.name)
        _check_no_nul(self.value)
        if not 1 <= self.index < 2**32:
            raise ValueError(f"header index out of range: {self.index}")


@dataclass(frozen=True, slots=True)
class DeleteRecipient:
    """``SMFIR_DELRCPT`` at end of message: remove one envelope recipient, named
    as the client wrote it in RCPT TO (Postfix compares with that form)."""

    address: str

    def __post_init__(self) -> None:
        _check_no_nul(self.address)
        if not self.address.strip("<> "):
            raise ValueError("no address to delete")


Response: TypeAlias = (
    OptNegReply
    | Continue
    | Accept
    | Reject
    | TempFail
    | Discard
    | Progress
    | Skip
    | TempFailCode
    | RejectCode
    | AddHeader
    | InsertHeader
    | ChangeHeader
    | DeleteRecipient
)


# --------------------------------------------------------------------------
# Frames


@dataclass(frozen=True, slots=True)
class Frame:
    code: str  # one character
    payload: bytes = b""


class FrameReader:
    """Cuts a byte stream into frames; keeps partial frames across calls.

    After a :class:`ProtocolError` the stream is out of sync for good: every
    later call raises again.
    """

    def __init__(self, max_length: int = MAX_FRAME_LENGTH) -> None:
        if max_length < 1:
            raise ValueError("max_length must be positive")
        self._max = max_length
        self._buf = bytearray()
        self._broken: str | None = None

    @property
    def pending(self) -> int:
        """Bytes received that do not make a whole frame yet."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        if self._broken is not None:
            raise ProtocolError(self._broken)
        self._buf += data
        frames: list[Frame] = []
        pos = 0
        buf = self._buf
        while len(buf) - pos >= 4:
            (length,) = _U32.unpack_from(buf, pos)
            if length == 0 or length > self._max:
                self._broken = f"bad frame length {length} (limit {self._max})"
                del buf[:]
                raise ProtocolError(self._broken)
            if len(buf) - pos - 4 < length:
                break
            start = pos + 4
            code = chr(buf[start])
            frames.append(Frame(code, bytes(buf[start + 1 : start + length])))
            pos = start + length
        if pos:
            del buf[:pos]
        return frames


# --------------------------------------------------------------------------
# Decoding


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


class _Cursor:
    __slots__ = ("code", "data", "pos")

    def __init__(self, frame: Frame) -> None:
        self.code = frame.code
        self.data = frame.payload
        self.pos = 0

    def fail(self, what: str) -> ProtocolError:
        return ProtocolError(f"command {self.code!r}: {what}")

    def u32(self) -> int:
        if len(self.data) - self.pos < 4:
            raise self.fail("truncated 32-bit integer")
        (v,) = _U32.unpack_from(self.data, self.pos)
        self.pos += 4
        return int(v)

    def u16(self) -> int:
        if len(self.data) - self.pos < 2:
            raise self.fail("truncated 16-bit integer")
        (v,) = _U16.unpack_from(self.data, self.pos)
        self.pos += 2
        return int(v)

    def char(self) -> str:
        if self.pos >= len(self.data):
            raise self.fail("missing character")
        c = chr(self.data[self.pos])
        self.pos += 1
        return c

    def string(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise self.fail("string without NUL terminator")
        s = _text(self.data[self.pos : end])
        self.pos = end + 1
        return s

    def strings(self) -> list[str]:
        out: list[str] = []
        while not self.at_end():
            out.append(self.string())
        return out

    def rest(self) -> bytes:
        r = self.data[self.pos :]
        self.pos = len(self.data)
        return r

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def end(self) -> None:
        if not self.at_end():
            raise self.fail(f"{len(self.data) - self.pos} unexpected trailing bytes")


def _decode_optneg(c: _Cursor) -> OptNeg:
    version, actions, protocol = c.u32(), c.u32(), c.u32()
    c.end()
    return OptNeg(version, Action(actions), Step(protocol))


def _decode_macro(c: _Cursor) -> DefineMacro:
    stage = c.char()
    items = c.strings()
    if len(items) % 2:
        raise c.fail("macro names and values do not pair up")
    return DefineMacro(stage, tuple(zip(items[::2], items[1::2], strict=True)))


def _decode_connect(c: _Cursor) -> Connect:
    hostname = c.string()
    fam = c.char()
    try:
        family = Family(fam)
    except ValueError:
        raise c.fail(f"unknown address family {fam!r}") from None
    if family is Family.UNKNOWN and c.at_end():
        return Connect(hostname, family)
    port = c.u16()
    address = c.string()
    c.end()
    return Connect(hostname, family, port, address)


def _decode_args(c: _Cursor) -> tuple[str, tuple[str, ...]]:
    items = c.strings()
    if not items:
        raise c.fail("missing address")
    return items[0], tuple(items[1:])


def _decode_mail(c: _Cursor) -> MailFrom:
    address, args = _decode_args(c)
    return MailFrom(address, args)


def _decode_rcpt(c: _Cursor) -> RcptTo:
    address, args = _decode_args(c)
    return RcptTo(address, args)


def _decode_helo(c: _Cursor) -> Helo:
    name = c.string()
    c.end()
    return Helo(name)


def _decode_header(c: _Cursor) -> Header:
    name, value = c.string(), c.string()
    c.end()
    return Header(name, value)


def _decode_unknown(c: _Cursor) -> Unknown:
    line = c.string()
    c.end()
    return Unknown(line)


def decode(frame: Frame) -> Command:
    """A frame from the MTA as a command value."""
    c = _Cursor(frame)
    code = frame.code
    if code == "O":
        return _decode_optneg(c)
    if code == "D":
        return _decode_macro(c)
    if code == "C":
        return _decode_connect(c)
    if code == "H":
        return _decode_helo(c)
    if code == "M":
        return _decode_mail(c)
    if code == "R":
        return _decode_rcpt(c)
    if code == "L":
        return _decode_header(c)
    if code == "B":
        return Body(c.rest())
    if code == "E":
        return EndOfMessage(c.rest())
    if code == "U":
        return _decode_unknown(c)
    simple = _SIMPLE_COMMANDS.get(code)
    if simple is not None:
        c.end()
        return simple
    raise ProtocolError(f"unknown command code {code!r}")


_SIMPLE_COMMANDS: dict[str, Command] = {
    "T": Data(),
    "N": EndOfHeaders(),
    "A": Abort(),
    "Q": Quit(),
    "K": QuitNewConnection(),
}

_SIMPLE_RESPONSES: dict[str, Response] = {
    "c": Continue(),
    "a": Accept(),
    "r": Reject(),
    "t": TempFail(),
    "d": Discard(),
    "p": Progress(),
    "s": Skip(),
}


def _decode_reply_code(c: _Cursor) -> ReplyCode:
    text = c.string()
    c.end()
    m = re.fullmatch(r"([45]\d\d) (\S+) (.*)", text, re.DOTALL)
    if m is None:
        raise c.fail(f"malformed reply {text!r}")
    try:
        return reply_code(Reply(int(m.group(1)), m.group(2), _unescape_percent(m.group(3))))
    except ValueError as exc:
        raise c.fail(str(exc)) from None


def _decode_optneg_reply(c: _Cursor) -> OptNegReply:
    version, actions, protocol = c.u32(), c.u32(), c.u32()
    lists: list[tuple[MacroStage, tuple[str, ...]]] = []
    while not c.at_end():
        stage = c.u32()
        names = c.string()
        try:
            lists.append((MacroStage(stage), tuple(names.split())))
        except ValueError:
            raise c.fail(f"unknown macro stage {stage}") from None
    try:
        return OptNegReply(version, Action(actions), Step(protocol), tuple(lists))
    except ValueError as exc:
        raise c.fail(str(exc)) from None


def decode_response(frame: Frame) -> Response:
    """A frame from a milter as a response value (for tests and tools)."""
    c = _Cursor(frame)
    code = frame.code
    try:
        if code == "O":
            return _decode_optneg_reply(c)
        if code == "y":
            return _decode_reply_code(c)
        if code == "h":
            name, value = c.string(), c.string()
            c.end()
            return AddHeader(name, value)
        if code in ("i", "m"):
            index = c.u32()
            name, value = c.string(), c.string()
            c.end()
            if code == "i":
                return InsertHeader(index, name, value)
            return ChangeHeader(index, name, value)
        if code == "-":
            address = c.string()
            c.end()
            return DeleteRecipient(address)
    except ValueError as exc:  # a field the value types refuse
        raise c.fail(str(exc)) from None
    simple = _SIMPLE_RESPONSES.get(code)
    if simple is not None:
        c.end()
        return simple
    raise ProtocolError(f"unknown response code {code!r}")


# --------------------------------------------------------------------------
# Encoding


def _escape_percent(text: str) -> str:
    # Postfix treats the reply like Sendmail's format string: "%%" is "%" and
    # a lone "%" is dropped. Double them so the client sees what we wrote.
    return text.replace("%", "%%")


def _unescape_percent(text: str) -> str:
    return text.replace("%%", "%")


def _frame(code: str, payload: bytes = b"") -> bytes:
    if len(payload) + 1 > MAX_FRAME_LENGTH:
        raise ProtocolError(f"frame {code!r} too long: {len(payload) + 1} bytes")
    return _U32.pack(len(payload) + 1) + code.encode("latin-1") + payload


def _z(text: str) -> bytes:
    b = _bytes(text)
    if b"\0" in b:
        raise ProtocolError("NUL inside a string field")
    return b + b"\0"


def _payload(message: Command | Response) -> tuple[str, bytes]:
    # Commands
    if isinstance(message, OptNeg):
        return "O", _U32.pack(message.version) + _U32.pack(message.actions) + _U32.pack(
            message.protocol
        )
    if isinstance(message, DefineMacro):
        if len(message.stage) != 1:
            raise ProtocolError(f"macro stage must be one character: {message.stage!r}")
        return "D", message.stage.encode("latin-1") + b"".join(
            _z(n) + _z(v) for n, v in message.macros
        )
    if isinstance(message, Connect):
        head = _z(message.hostname) + message.family.value.encode("ascii")
        if message.family is Family.UNKNOWN and not message.address and not message.port:
            return "C", head
        return "C", head + _U16.pack(message.port) + _z(message.address)
    if isinstance(message, Helo):
        return "H", _z(message.name)
    if isinstance(message, MailFrom):
        return "M", _z(message.address) + b"".join(_z(a) for a in message.args)
    if isinstance(message, RcptTo):
        return "R", _z(message.address) + b"".join(_z(a) for a in message.args)
    if isinstance(message, Header):
        return "L", _z(message.name) + _z(message.value)
    if isinstance(message, Body):
        return "B", message.chunk
    if isinstance(message, EndOfMessage):
        return "E", message.chunk
    if isinstance(message, Unknown):
        return "U", _z(message.line)
    for code, command in _SIMPLE_COMMANDS.items():
        if message == command:
            return code, b""
    # Responses
    if isinstance(message, OptNegReply):
        lists = b"".join(_U32.pack(stage) + _z(" ".join(names)) for stage, names in message.macros)
        return "O", (
            _U32.pack(message.version)
            + _U32.pack(message.actions)
            + _U32.pack(message.protocol)
            + lists
        )
    if isinstance(message, TempFailCode | RejectCode):
        r = message.reply
        return "y", _z(f"{r.code} {r.enhanced} {_escape_percent(r.text)}")
    if isinstance(message, AddHeader):
        return "h", _z(message.name) + _z(message.value)
    if isinstance(message, InsertHeader):
        return "i", _U32.pack(message.index) + _z(message.name) + _z(message.value)
    if isinstance(message, ChangeHeader):
        return "m", _U32.pack(message.index) + _z(message.name) + _z(message.value)
    if isinstance(message, DeleteRecipient):
        return "-", _z(message.address)
    for code, response in _SIMPLE_RESPONSES.items():
        if message == response:
            return code, b""
    raise ProtocolError(f"cannot encode {message!r}")


def encode(message: Command | Response) -> bytes:
    """One whole frame (length, code, payload) for a command or a response."""
    try:
        code, payload = _payload(message)
    except struct.error as exc:  # an integer field out of range
        raise ProtocolError(f"cannot encode {message!r}: {exc}") from None
    return _frame(code, payload)
