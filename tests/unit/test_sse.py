from app.sse import SSEEvent, encode, iter_sse


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
