"""Reading a write-ahead log segment's bytes in tests, independently of the implementation."""

from __future__ import annotations

import struct
from pathlib import Path


def records_end(path: Path) -> int:
    """Where a segment's records end: its size less the zeros preallocated after them."""
    data = path.read_bytes()
    offset = 8  # the segment header
    while offset + 8 <= len(data):
        length, checksum = struct.unpack_from("<II", data, offset)
        if length == checksum == 0:
            break  # no record is empty: zeros from here on
        offset += 8 + length
    return min(offset, len(data))
