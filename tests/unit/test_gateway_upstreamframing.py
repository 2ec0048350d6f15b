"""The upstream reply parser alone: whatever pieces the bytes arrive in, the same head, body
and end; what is not HTTP/1.x is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import upstreamframing


class Seen:
    def __init__(self) -> None:
        self.heads: list[tuple[int, dict[str, str], int | None]] = []
        self.got = b""
        self.ends: list[bool] = []

    def head(self, status: int, headers: dict[str, str], length: int | None) -> None:
        assert not self.ends, "a head after the end"
        self.heads.append((status, headers, length))

    def body(self, data: bytes) -> None:
        assert self.heads, "a body before the head"
        assert not self.ends, "a body after the end"
        self.got += data

    def end(self, keep_alive: bool) -> None:
        self.ends.append(keep_alive)


def fed(pieces: list[bytes]) -> Seen:
    seen = Seen()
    parser = upstreamframing.ReplyParser(seen)
    parser.expect()
    for piece in pieces:
        parser.feed(piece)
    return seen


def cut(data: bytes, at: list[int]) -> list[bytes]:
    points = sorted({min(a, len(data)) for a in at})
    return [data[i:j] for i, j in zip([0, *points], [*points, len(data)], strict=True)]


def chunked(payload: bytes, sizes: list[int]) -> bytes:
    out, at = b"", 0
    for size in sizes:
        piece = payload[at : at + size]
        at += len(piece)
        if piece:
            out += b"%x;ext=1\r\n%b\r\n" % (len(piece), piece)
    if at < len(payload):
        out += b"%x\r\n%b\r\n" % (len(payload) - at, payload[at:])
    return out + b"0\r\nX-Trailer: t\r\n\r\n"


@given(
    payload=st.binary(max_size=300),
    sizes=st.lists(st.integers(1, 64), max_size=10),
    at=st.lists(st.integers(0, 800), max_size=12),
    interim=st.booleans(),
)
def test_a_chunked_reply_reads_the_same_in_any_pieces(payload, sizes, at, interim) -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\nx-a: 2\r\n\r\n"
    first = b"HTTP/1.1 100 Continue\r\n\r\n" if interim else b""
    seen = fed(cut(first + head + chunked(payload, sizes), at))
    assert seen.heads == [(200, {"transfer-encoding": "chunked", "x-a": "1, 2"}, None)]
    assert seen.got == payload
    assert seen.ends == [True]


@given(payload=st.binary(max_size=300), at=st.lists(st.integers(0, 400), max_size=12))
def test_a_length_reply_reads_the_same_in_any_pieces(payload, at) -> None:
    data = b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n\r\n%b" % (len(payload), payload)
    seen = fed(cut(data, at))
    assert seen.heads == [(201, {"content-length": str(len(payload))}, len(payload))]
    assert seen.got == payload
    assert seen.ends == [True]


def test_keep_alive_follows_the_version_and_the_connection_header() -> None:
    def kept(head: bytes) -> bool:
        return fed([head + b"Content-Length: 0\r\n\r\n"]).ends == [True]

    assert kept(b"HTTP/1.1 200 OK\r\n")
    assert not kept(b"HTTP/1.1 200 OK\r\nConnection: close\r\n")
    assert not kept(b"HTTP/1.0 200 OK\r\n")
    assert kept(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n")


def test_bytes_past_the_length_make_the_connection_unusable() -> None:
    seen = fed([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA"])
    assert (seen.got, seen.ends) == (b"ok", [False])


def test_a_body_up_to_the_close_ends_only_when_the_connection_closes() -> None:
    seen = Seen()
    parser = upstreamframing.ReplyParser(seen)
    parser.expect()
    parser.feed(b"HTTP/1.1 200 OK\r\n\r\nall of it")
    assert (seen.got, seen.ends, parser.busy) == (b"all of it", [], True)
    assert parser.closed() is True
    assert seen.ends == [False]


def test_a_reply_cut_short_by_the_close_is_not_an_end() -> None:
    seen = Seen()
    parser = upstreamframing.ReplyParser(seen)
    parser.expect()
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
    assert parser.closed() is False
    assert seen.ends == []


@pytest.mark.parametrize("status", [204, 304])
def test_replies_without_a_body_end_at_their_head(status: int) -> None:
    seen = fed([b"HTTP/1.1 %d X\r\nContent-Length: 5\r\n\r\n" % status])
    assert (seen.heads[0][0], seen.got, seen.ends) == (status, b"", [True])


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "not HTTP/1.x"),
        (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "malformed header"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokay\r\n", "overran"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 20_000, "too long"),
    ],
)
def test_what_is_not_http_is_refused(data: bytes, why: str) -> None:
    with pytest.raises(upstreamframing.BadReply, match=why):
        fed([data])
