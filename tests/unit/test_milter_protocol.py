"""milter.protocol: bytes <-> values, frames, and the errors for bad input."""

from __future__ import annotations

import struct

import pytest
from miltertest import codec as mt_codec

from milter.protocol import (
    MAX_FRAME_LENGTH,
    Abort,
    Accept,
    Action,
    AddHeader,
    Body,
    ChangeHeader,
    Connect,
    Continue,
    Data,
    DefineMacro,
    Discard,
    EndOfHeaders,
    EndOfMessage,
    Family,
    Frame,
    FrameReader,
    Header,
    Helo,
    InsertHeader,
    MacroStage,
    MailFrom,
    OptNeg,
    OptNegReply,
    Progress,
    ProtocolError,
    Quit,
    QuitNewConnection,
    RcptTo,
    Reject,
    RejectCode,
    Skip,
    Step,
    TempFail,
    TempFailCode,
    Unknown,
    decode,
    decode_response,
    encode,
    reply_code,
)
from rules.replies import REJECT_POLICY, TEMPFAIL, TEMPFAIL_POLICY, Reply

COMMANDS = [
    OptNeg(6, Action(0x1FF), Step(0x1FFFFF)),
    OptNeg(2, Action.ADDHDRS, Step(0)),
    DefineMacro("C", (("j", "mx.example"), ("{client_addr}", "192.0.2.1"))),
    DefineMacro("M", ()),
    DefineMacro("E", (("i", ""),)),
    Connect("client.example", Family.INET, 40000, "192.0.2.1"),
    Connect("[2001:db8::1]", Family.INET6, 25, "2001:db8::1"),
    Connect("localhost", Family.UNIX, 0, "/var/run/sock"),
    Connect("unknown", Family.UNKNOWN),
    Helo("client.example"),
    MailFrom("<alice@example.com>", ("SIZE=1234", "BODY=8BITMIME")),
    MailFrom("<>"),
    RcptTo("<support@example.com>"),
    RcptTo("<support@example.com>", ("NOTIFY=NEVER",)),
    Data(),
    Header("Subject", "Hello, world"),
    Header("X-Empty", ""),
    Header("Subject", "caf\u00e9 \udcff raw byte"),
    Header("Received", "from a\n\tby b"),
    EndOfHeaders(),
    Body(b"line 1\r\nline 2\r\n\x00\xff"),
    Body(b""),
    EndOfMessage(),
    EndOfMessage(b"last chunk"),
    Abort(),
    Quit(),
    QuitNewConnection(),
    Unknown("XFOO bar"),
]

RESPONSES = [
    OptNegReply(6, Action.ADDHDRS | Action.CHGHDRS, Step.NOHELO | Step.NR_HDR),
    OptNegReply(
        6,
        Action.ADDHDRS | Action.SETSYMLIST,
        Step(0),
        (
            (MacroStage.CONNECT, ("j", "{client_addr}")),
            (MacroStage.EOM, ("i",)),
        ),
    ),
    Continue(),
    Accept(),
    Reject(),
    TempFail(),
    Discard(),
    Progress(),
    Skip(),
    RejectCode(REJECT_POLICY),
    TempFailCode(TEMPFAIL_POLICY),
    TempFailCode(Reply(421, "4.3.2", "100% busy")),
    AddHeader("X-Casegate-Auth", "v=1; sig=abc"),
    InsertHeader(0, "X-Top", "first"),
    ChangeHeader(2, "X-Casegate-Auth", ""),
    ChangeHeader(1, "Subject", "new subject"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: type(c).__name__)
def test_command_round_trip(command: object) -> None:
    wire = encode(command)  # type: ignore[arg-type]
    frames = FrameReader().feed(wire)
    assert len(frames) == 1
    assert decode(frames[0]) == command


@pytest.mark.parametrize("response", RESPONSES, ids=lambda r: type(r).__name__)
def test_response_round_trip(response: object) -> None:
    wire = encode(response)  # type: ignore[arg-type]
    (frame,) = FrameReader().feed(wire)
    assert decode_response(frame) == response


def test_frame_layout() -> None:
    assert encode(Continue()) == b"\x00\x00\x00\x01c"
    assert encode(Helo("x")) == b"\x00\x00\x00\x03Hx\x00"
    assert encode(ChangeHeader(1, "X-A", "")) == b"\x00\x00\x00\x0am\x00\x00\x00\x01X-A\x00\x00"


def test_reply_code_wire_format_is_what_postfix_checks() -> None:
    # milter8.c: "[45]dd[ -][45]..." with the enhanced class equal to the code's.
    wire = encode(RejectCode(Reply(550, "5.7.1", "Sender rejected")))
    assert wire[4:5] == b"y"
    assert wire[5:] == b"550 5.7.1 Sender rejected\x00"


def test_percent_is_doubled_for_postfix() -> None:
    wire = encode(TempFailCode(Reply(451, "4.7.1", "100% busy")))
    assert wire[5:] == b"451 4.7.1 100%% busy\x00"


def test_agrees_with_miltertest_codec() -> None:
    # Our encoding of Postfix's commands decodes with an independent codec...
    cmd, fields, rest = mt_codec.decode_msg(
        encode(Connect("client.example", Family.INET, 40000, "192.0.2.1"))
    )
    assert (cmd, rest) == ("C", b"")
    assert fields == {
        "hostname": "client.example",
        "family": "4",
        "port": 40000,
        "address": "192.0.2.1",
    }
    cmd, fields, _ = mt_codec.decode_msg(encode(ChangeHeader(3, "X-Casegate-Auth", "")))
    assert (cmd, fields) == ("m", {"index": 3, "name": "X-Casegate-Auth", "value": ""})
    cmd, fields, _ = mt_codec.decode_msg(encode(RejectCode(REJECT_POLICY)))
    assert cmd == "y"
    assert fields == {"smtpcode": "550", "space": " ", "text": "5.7.1 Message rejected"}
    # ...and its encoding decodes with ours.
    wire = mt_codec.encode_msg("D", cmdcode="M", nameval=["i", "4AbC", "{auth_authen}", "a@b"])
    assert decode(FrameReader().feed(wire)[0]) == DefineMacro(
        "M", (("i", "4AbC"), ("{auth_authen}", "a@b"))
    )
    wire = mt_codec.encode_msg("M", args=["<a@b>", "SIZE=10"])
    assert decode(FrameReader().feed(wire)[0]) == MailFrom("<a@b>", ("SIZE=10",))


# -- typed replies -------------------------------------------------------------


def test_tempfail_code_refuses_a_permanent_reply() -> None:
    with pytest.raises(ValueError, match="not a 4xx"):
        TempFailCode(REJECT_POLICY)


def test_reject_code_refuses_a_temporary_reply() -> None:
    with pytest.raises(ValueError, match="not a 5xx"):
        RejectCode(TEMPFAIL)


@pytest.mark.parametrize(
    "reply",
    [
        Reply(451, "5.7.1", "class mismatch"),
        Reply(451, "4.7", "short enhanced code"),
        Reply(451, "", "no enhanced code"),
        Reply(451, "4.7.1", "NUL \0 inside"),
    ],
)
def test_malformed_replies_are_refused(reply: Reply) -> None:
    with pytest.raises(ValueError):
        TempFailCode(reply)


def test_reply_code_picks_the_type() -> None:
    assert isinstance(reply_code(TEMPFAIL), TempFailCode)
    assert isinstance(reply_code(REJECT_POLICY), RejectCode)
    with pytest.raises(ValueError):
        reply_code(Reply(250, "2.0.0", "ok"))


@pytest.mark.parametrize(
    "make",
    [
        lambda: AddHeader("", "x"),
        lambda: AddHeader("Bad Name", "x"),
        lambda: AddHeader("Bad:Name", "x"),
        lambda: AddHeader("X-Ok", "nul\0"),
        lambda: ChangeHeader(0, "X-Ok", ""),
        lambda: InsertHeader(-1, "X-Ok", ""),
    ],
)
def test_bad_header_edits_are_refused(make: object) -> None:
    with pytest.raises(ValueError):
        make()  # type: ignore[operator]


def test_encoding_a_nul_in_a_string_field_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        encode(Helo("a\0b"))


# -- FrameReader ---------------------------------------------------------------


def test_frames_split_at_every_byte() -> None:
    wire = b"".join(encode(c) for c in COMMANDS)
    reader = FrameReader()
    got = []
    for i in range(len(wire)):
        got += reader.feed(wire[i : i + 1])
    assert [decode(f) for f in got] == COMMANDS
    assert reader.pending == 0


def test_frames_joined_in_one_read() -> None:
    wire = b"".join(encode(c) for c in COMMANDS)
    frames = FrameReader().feed(wire)
    assert [decode(f) for f in frames] == COMMANDS


def test_partial_frame_stays_pending() -> None:
    wire = encode(Header("Subject", "x"))
    reader = FrameReader()
    assert reader.feed(wire[:-2]) == []
    assert reader.pending == len(wire) - 2
    assert reader.feed(wire[-2:]) == [Frame("L", b"Subject\0x\0")]


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x00\x00\x00",  # zero length
        struct.pack("!I", MAX_FRAME_LENGTH + 1) + b"B",  # absurd length
        b"\xff\xff\xff\xffgarbage",
        b"GET / HTTP/1.1\r\n",  # someone pointed a browser at it
    ],
)
def test_absurd_lengths_are_refused(data: bytes) -> None:
    reader = FrameReader()
    with pytest.raises(ProtocolError):
        reader.feed(data)
    with pytest.raises(ProtocolError):  # and it stays broken
        reader.feed(encode(Continue()))


def test_max_length_is_configurable() -> None:
    reader = FrameReader(max_length=10)
    with pytest.raises(ProtocolError):
        reader.feed(encode(Header("Subject", "far too long for ten")))


# -- malformed frames -------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        Frame("Z", b""),  # unknown command
        Frame("O", b"\x00\x00\x00\x06"),  # truncated OPTNEG
        Frame("O", b"\x00" * 13),  # trailing byte
        Frame("D", b""),  # macro without stage
        Frame("D", b"Mi\x00"),  # name without value
        Frame("D", b"Mi\x00value"),  # value without NUL
        Frame("C", b"host\x00"),  # no family
        Frame("C", b"host\x00X\x00\x19addr\x00"),  # unknown family
        Frame("C", b"host\x004\x00"),  # truncated port
        Frame("C", b"host\x004\x00\x19addr"),  # address without NUL
        Frame("C", b"host\x004\x00\x19addr\x00extra"),
        Frame("H", b"name"),
        Frame("M", b""),  # no address
        Frame("R", b"<a@b>"),
        Frame("L", b"Subject\x00"),  # header without value
        Frame("L", b"Subject\x00v\x00x"),
        Frame("N", b"x"),  # EOH with payload
        Frame("A", b"x"),
        Frame("T", b"x"),
        Frame("U", b"no nul"),
    ],
)
def test_malformed_commands_raise_protocol_error(frame: Frame) -> None:
    with pytest.raises(ProtocolError):
        decode(frame)


@pytest.mark.parametrize(
    "frame",
    [
        Frame("?", b""),
        Frame("c", b"x"),
        Frame("y", b"250 2.0.0 ok\x00"),  # not 4xx/5xx
        Frame("y", b"550 4.7.1 mismatch\x00"),
        Frame("y", b"550 5.7.1 no nul"),
        Frame("y", b"garbage\x00"),
        Frame("m", b"\x00\x00\x00\x00X\x00\x00"),  # index 0
        Frame("h", b"Bad Name\x00v\x00"),
        Frame("O", b"\x00\x00\x00\x06" * 3 + b"\x00\x00\x00\x09i\x00"),  # unknown stage
        Frame("O", b"\x00\x00\x00\x06" * 3 + b"\x00\x00\x00\x05i"),  # list without NUL
    ],
)
def test_malformed_responses_raise_protocol_error(frame: Frame) -> None:
    with pytest.raises(ProtocolError):
        decode_response(frame)


def test_unknown_flag_bits_survive() -> None:
    # Postfix may offer bits we have no name for (SMFIP_MDS_*); keep them.
    cmd = OptNeg(6, Action(0x1FF), Step(0x1FFFFF | 0x10000000 | 0x40000000))
    assert decode(FrameReader().feed(encode(cmd))[0]) == cmd
