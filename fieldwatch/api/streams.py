"""A request body as lines of text for blocking code in a worker thread, in constant memory.

The import reads the body as it streams in: the worker thread pulls one chunk at a time from the
event loop (``anyio.from_thread.run``), decodes it incrementally and yields whole lines. Nothing is
buffered beyond one chunk and one unfinished line (at most ``max_line`` characters), so neither
the body's size nor its decoding weighs on the event loop or on memory.
"""

from __future__ import annotations

import codecs
from collections.abc import AsyncIterator, Iterator

import anyio.from_thread


class BodyTextError(ValueError):
    """The body is not UTF-8 text, or has a line longer than allowed."""


def body_lines(chunks: AsyncIterator[bytes], *, max_line: int, encoding: str = "utf-8-sig") -> Iterator[str]:
    """Lines (with their ends) of the body ``chunks``; to be iterated in a worker thread started by anyio."""

    async def next_chunk() -> bytes:
        return await anext(chunks, b"")

    decoder = codecs.getincrementaldecoder(encoding)()
    pending = ""
    offset = 0
    while True:
        chunk = anyio.from_thread.run(next_chunk)
        last = not chunk
        try:
            text = decoder.decode(chunk, final=last)
        except UnicodeDecodeError as exc:
            raise BodyTextError(f"the body is not UTF-8 text (byte {offset + exc.start}): {exc.reason}") from None
        offset += len(chunk)
        pending += text
        start = 0
        while (end := pending.find("\n", start)) >= 0:
            yield pending[start : end + 1]
            start = end + 1
        pending = pending[start:]
        if len(pending) > max_line:
            raise BodyTextError(f"a line is longer than {max_line} characters: not a CSV row")
        if last:
            if pending:
                yield pending
            return
