import time

import pytest

from app.sse import LineTooLong, SSEEvent, encode, iter_sse


def test_events_split_across_arbitrary_chunks() -> None:
    raw = (
        b'data: {"a":1}\n\n: OPENROUTER PROCESSING\n\n'
        b'event: content-delta\ndata: {"b":2}\r\n\r\ndata: [DONE]\n\n'
    )
    for size in (1, 3, 7, len(raw)):
        chunks = [raw[i : i + size] for i in range(0, len(raw), size)]
        assert list(iter_sse(chunks)) == [
            SSEEvent("", b'{"a":1}'),
            SSEEvent("content-delta", b'{"b":2}'),
            SSEEvent("", b"[DONE]"),
        ]


def test_multiline_data_and_unterminated_tail() -> None:
    assert list(iter_sse([b"data: one\ndata: two\n\ndata: tail"])) == [
        SSEEvent("", b"one\ntwo"),
        SSEEvent("", b"tail"),
    ]


def test_encode() -> None:
    assert encode({"x": "é"}) == 'data: {"x":"é"}\n\n'.encode()


def test_a_line_over_the_cap_raises_as_soon_as_it_is_seen() -> None:
    pulled = 0

    def chunks():
        nonlocal pulled
        yield b"data: 1\n\ndata: "
        for _ in range(640):  # a 40 MB line in 64 KiB pieces
            pulled += 1
            yield b"a" * 65536

    events = iter_sse(chunks(), max_line=1024 * 1024)
    assert next(events) == SSEEvent("", b"1")
    with pytest.raises(LineTooLong):
        next(events)
    assert pulled == 16  # "data: " + 16 pieces is just past 1 MiB: the rest is never read


def test_a_long_line_is_parsed_in_linear_time() -> None:
    """One 16 MB line in 64 KiB pieces costs about what 16 MB of short lines cost (the old parser
    re-copied and re-scanned the whole line for every piece: ~250 times more work)."""
    piece = b"a" * 65536
    one_line = [b"data: "] + [piece] * 256 + [b"\n\n"]
    short_lines = [b"data: " + piece[:65528] + b"\n\n"] * 256

    def cost(chunks: list[bytes]) -> tuple[float, list[SSEEvent]]:
        start = time.process_time()
        events = list(iter_sse(chunks, max_line=32 * 1024 * 1024))
        return time.process_time() - start, events

    reference, many = cost(short_lines)
    took, (event,) = cost(one_line)
    assert len(many) == 256 and len(event.data) == 256 * 65536
    assert took < 20 * reference + 0.05
