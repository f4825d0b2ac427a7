"""HyperLogLog: PFADD, PFCOUNT and PFMERGE, byte for byte as Redis stores them (hyperloglog.c).

An HLL is a string, as in Redis, so GET, SET, COPY, RENAME, DUMP-less migrations (GET from
Redis, SET here, and back) and every key command treat it as one. Its layout is Redis's:

    "HYLL" | encoding (0 dense, 1 sparse) | 3 unused bytes | 8-byte cached cardinality | data

The cached cardinality is little endian; the top bit of its last byte (byte 15) set means
stale. Dense data is 16384 registers of 6 bits packed from the least significant bit (12288
bytes). Sparse data is a run-length code of ZERO (00xxxxxx: 1-64 zero registers), XZERO
(01xxxxxx yyyyyyyy: 1-16384 zero registers) and VAL (1vvvvvxx: 1-4 registers of value 1-32)
opcodes. A new HLL is sparse; it turns dense, as in Redis with its default
hll-sparse-max-bytes of 3000, when a register needs a value above 32 or the string would grow
past SPARSE_BYTES_MAX. The sparse update below is Redis's hllSparseSet step by step (split the
opcode holding the register, then merge equal VAL neighbours in a window of five opcodes), so
the same commands leave the same bytes as in Redis: the register math is all integers, the
same on every replica. The estimator (Ertl's, Redis 5 and later) is the one place with floats,
and it only shapes replies.

Differences from Redis, all in the README: PFCOUNT is a read here (reads never change the
state), so it does not write the cardinality it computed into the header as Redis's PFCOUNT of
one key does: after PFCOUNT, GET shows the stale bit set where Redis shows the cached count (a
cache Redis would use, which replikv recomputes: the replies are the same). And a corrupted
HLL is never left half updated: where Redis answers INVALIDOBJ after changing some registers,
replikv answers it having changed nothing.

Passive replication: a PFADD on a dense HLL changes a few bytes of 12 KB, so it ships only the
registers it changed (state.splice_string, an EFFECT_STRING_SPLICE of a few bytes each), and
a sparse one ships the one stretch between its first and last change; the whole string only
where that is smaller, or when the key is new or changes encoding.
"""

from __future__ import annotations

import math
import re
import struct
from typing import TYPE_CHECKING

from replikv.replies import OK, CommandError

if TYPE_CHECKING:
    from replikv.state import KVState

MAGIC = b"HYLL"
ENCODING_DENSE = 0
ENCODING_SPARSE = 1
HEADER_BYTES = 16
REGISTERS = 16384  # 2**14: the low 14 bits of the hash pick the register
REGISTER_BITS = 6
DENSE_BYTES = HEADER_BYTES + REGISTERS * REGISTER_BITS // 8  # 12304
SPARSE_BYTES_MAX = 3000  # Redis's hll-sparse-max-bytes default (the header counts)
SPARSE_VALUE_MAX = 32  # the largest register a VAL opcode holds
_CACHE_STALE_BYTE = 15  # its top bit set: the cached cardinality is stale
_Q = 50  # 64 - 14: hash bits left for the run of zeros
_ALPHA_INF = 0.721347520444481703680  # 0.5 / ln(2)

NOT_HLL = "WRONGTYPE Key is not a valid HyperLogLog string value."
INVALID_HLL = "INVALIDOBJ Corrupted HLL object detected"
# PFDEBUG and PFSELFTEST are Redis's test hooks (PFDEBUG rewrites a key's encoding in place).
DEBUG_REFUSED = frozenset({"pfdebug", "pfselftest"})

# A new HLL: sparse, one XZERO of 16384 registers, a cached cardinality of 0 (valid).
EMPTY_SPARSE = MAGIC + bytes([ENCODING_SPARSE]) + bytes(11) + b"\x7f\xff"

_M = 0xC6A4A7935BD1E995
_U64 = (1 << 64) - 1
_SEED = 0xADC83B19
_unpack_blocks = [struct.Struct(f"<{n}Q").unpack_from for n in range(64)]


class _Corrupt(Exception):
    """The sparse code does not describe 16384 registers (Redis: INVALIDOBJ)."""


def murmurhash64a(data: bytes, seed: int = _SEED) -> int:
    """Redis's MurmurHash64A (endian neutral), with HyperLogLog's seed by default."""
    length = len(data)
    h = seed ^ ((length * _M) & _U64)
    blocks = length >> 3
    if blocks:
        words = (_unpack_blocks[blocks](data) if blocks < 64
                 else struct.unpack_from(f"<{blocks}Q", data))
        for k in words:
            k = (k * _M) & _U64
            k = ((k ^ (k >> 47)) * _M) & _U64
            h = ((h ^ k) * _M) & _U64
    if length & 7:
        h = ((h ^ int.from_bytes(data[blocks << 3:], "little")) * _M) & _U64
    h = ((h ^ (h >> 47)) * _M) & _U64
    return h ^ (h >> 47)


def pattern(element: bytes) -> tuple[int, int]:
    """(register, run length) for an element, as Redis's hllPatLen: the hash's low 14 bits
    pick the register, and the value is 1 + the zeros above them (at most 51)."""
    h = murmurhash64a(element)
    rest = (h >> 14) | (1 << _Q)
    return h & (REGISTERS - 1), (rest & -rest).bit_length()


# ---- validation ----


def _hll_or_error(value: bytes) -> int:
    """The encoding of a string that is an HLL (Redis's isHLLObjectOrReply), or CommandError."""
    if (len(value) < HEADER_BYTES or value[:4] != MAGIC or value[4] > ENCODING_SPARSE
            or (value[4] == ENCODING_DENSE and len(value) != DENSE_BYTES)):
        raise CommandError(NOT_HLL)
    return value[4]


# ---- registers as one byte each ("raw", Redis's HLL_RAW), by whole-array integer math ----

_LANE = REGISTERS // 4  # a dense HLL is 4096 groups of 3 bytes holding 4 registers


def _repeat(byte: int, count: int) -> int:
    return int.from_bytes(bytes([byte]) * count, "little")


_L03, _L0F, _L3F = _repeat(0x03, _LANE), _repeat(0x0F, _LANE), _repeat(0x3F, _LANE)
_H80 = _repeat(0x80, REGISTERS)
_LFF = _repeat(0xFF, REGISTERS)


def _dense_raw(value: bytes | bytearray) -> bytes:
    """The 16384 registers of a dense HLL, one byte each."""
    data = value[HEADER_BYTES:DENSE_BYTES]
    x0 = int.from_bytes(data[0::3], "little")
    x1 = int.from_bytes(data[1::3], "little")
    x2 = int.from_bytes(data[2::3], "little")
    raw = bytearray(REGISTERS)
    raw[0::4] = (x0 & _L3F).to_bytes(_LANE, "little")
    raw[1::4] = (((x0 >> 6) & _L03) | ((x1 & _L0F) << 2)).to_bytes(_LANE, "little")
    raw[2::4] = (((x1 >> 4) & _L0F) | ((x2 & _L03) << 4)).to_bytes(_LANE, "little")
    raw[3::4] = ((x2 >> 2) & _L3F).to_bytes(_LANE, "little")
    return bytes(raw)


def _dense_data(raw: bytes) -> bytes:
    """16384 registers (each at most 63) packed as dense HLL data (12288 bytes)."""
    r0, r1, r2, r3 = (int.from_bytes(raw[i::4], "little") for i in range(4))
    data = bytearray(REGISTERS * REGISTER_BITS // 8)
    data[0::3] = (r0 | ((r1 & _L03) << 6)).to_bytes(_LANE, "little")
    data[1::3] = (((r1 >> 2) & _L0F) | ((r2 & _L0F) << 4)).to_bytes(_LANE, "little")
    data[2::3] = (((r2 >> 4) & _L03) | (r3 << 2)).to_bytes(_LANE, "little")
    return bytes(data)


def _sparse_raw(value: bytes | bytearray) -> bytes:
    """The registers of a sparse HLL, one byte each; _Corrupt unless its opcodes cover exactly
    16384 registers (Redis's check in hllSparseToDense, hllMerge and hllSparseRegHisto)."""
    parts: list[bytes] = []
    index = 0
    p, end = HEADER_BYTES, len(value)
    while p < end:
        c = value[p]
        if c < 0x40:
            run = (c & 0x3F) + 1
            parts.append(bytes(run))
            p += 1
        elif c < 0x80:  # a truncated XZERO reads Redis's terminating zero byte
            run = (((c & 0x3F) << 8) | (value[p + 1] if p + 1 < end else 0)) + 1
            parts.append(bytes(run))
            p += 2
        else:
            run = (c & 3) + 1
            if index + run > REGISTERS:
                raise _Corrupt
            parts.append(bytes([((c >> 2) & 0x1F) + 1]) * run)
            p += 1
        index += run
    if index != REGISTERS:
        raise _Corrupt
    return b"".join(parts)


def _raw_of(value: bytes) -> bytes:
    if value[4] == ENCODING_DENSE:
        return _dense_raw(value)
    try:
        return _sparse_raw(value)
    except _Corrupt:
        raise CommandError(INVALID_HLL) from None


def _raw_max(a: int, b: int) -> int:
    """Register by register maximum of two raw arrays held as integers (registers <= 63):
    128 + a - b in each byte never borrows, and its top bit says a >= b."""
    pick_a = (((a | _H80) - b) & _H80) >> 7
    pick_a *= 0xFF
    return (a & pick_a) | (b & (_LFF ^ pick_a))


# ---- the estimator ----


def _sigma(x: float) -> float:
    if x == 1.0:
        return math.inf
    y = 1.0
    z = x
    while True:
        x *= x
        z_prime = z
        z += x * y
        y += y
        if z_prime == z:
            return z


def _tau(x: float) -> float:
    if x == 0.0 or x == 1.0:
        return 0.0
    y = 1.0
    z = 1 - x
    while True:
        x = math.sqrt(x)
        z_prime = z
        y *= 0.5
        z -= math.pow(1 - x, 2) * y
        if z_prime == z:
            return z / 3


def estimate(raw: bytes) -> int:
    """Redis's hllCount on registers one byte each: Ertl's improved estimator, in the same
    double-precision steps, rounded half away from zero as llroundl."""
    histogram = [0] * 64
    left = REGISTERS
    for v in range(64):  # until every register is counted (most are small)
        if not left:
            break
        histogram[v] = found = raw.count(v)
        left -= found
    m = float(REGISTERS)
    z = m * _tau((m - histogram[_Q + 1]) / m)
    for j in range(_Q, 0, -1):
        z += histogram[j]
        z *= 0.5
    z += m * _sigma(histogram[0] / m)
    e = _ALPHA_INF * m * m / z
    whole = math.floor(e)
    return int(whole) + (1 if e - whole >= 0.5 else 0)


# ---- the sparse update (Redis's hllSparseSet) ----

_PROMOTE = 2
_NONZERO = re.compile(rb"[^\x00]")


def _val(value: int, run: int) -> int:
    return 0x80 | ((value - 1) << 2) | (run - 1)


def _zeros(run: int) -> bytes:
    """ZERO for up to 64 registers, XZERO beyond (as Redis splits a run of zeros)."""
    if run > 64:
        return bytes([((run - 1) >> 8) | 0x40, (run - 1) & 0xFF])
    return bytes([run - 1])


class _Hint:
    """Where the last update's scan may resume: the opcode before the one it changed (at byte
    `at`, covering registers from `first`), and the opcode before that (`before`, -1 for
    none). Nothing before `at` changes in an update, so the next scan for a register at or
    past `first` starts there (PFMERGE sets registers in ascending order)."""

    __slots__ = ("at", "before", "first")

    def __init__(self) -> None:
        self.at, self.first, self.before = HEADER_BYTES, 0, -1


def _sparse_set(buf: bytearray, index: int, count: int, hint: _Hint) -> int:
    """Set register `index` to `count` if that is more than it holds: 1 if it did, 0 if not,
    _PROMOTE if Redis would turn the HLL dense instead. _Corrupt for a bad sparse code."""
    if count > SPARSE_VALUE_MAX:
        return _PROMOTE
    end = len(buf)
    # prev: the opcode before the one found (-1: none), prev_first its first register (-1:
    # unknown, when the scan starts at the hint and stops there), before: the one before prev.
    if hint.first <= index:
        p, first, prev = hint.at, hint.first, hint.before
    else:
        p, first, prev = HEADER_BYTES, 0, -1
    prev_first = -1 if prev >= 0 else 0
    before = -1
    span = 0
    oplen = 1
    c = 0
    while p < end:
        c = buf[p]
        if c < 0x40:
            span, oplen = (c & 0x3F) + 1, 1
        elif c >= 0x80:
            span, oplen = (c & 3) + 1, 1
        else:
            if p + 1 >= end:
                raise _Corrupt
            span, oplen = (((c & 0x3F) << 8) | buf[p + 1]) + 1, 2
        if index <= first + span - 1:
            break
        before, prev, prev_first = prev, p, first
        p += oplen
        first += span
    if span == 0 or p >= end:
        raise _Corrupt
    is_val = c >= 0x80
    is_zero = c < 0x40
    if is_val:
        current = ((c >> 2) & 0x1F) + 1
        if current >= count:
            return 0
    if (is_val or is_zero) and span == 1:
        buf[p] = _val(count, 1)
    else:
        last = first + span - 1
        seq = bytearray()
        if is_val:
            if index != first:
                seq.append(_val(current, index - first))
            seq.append(_val(count, 1))
            if index != last:
                seq.append(_val(current, last - index))
        else:
            if index != first:
                seq += _zeros(index - first)
            seq.append(_val(count, 1))
            if index != last:
                seq += _zeros(last - index)
        if len(seq) > oplen and len(buf) + len(seq) - oplen > SPARSE_BYTES_MAX:
            return _PROMOTE
        buf[p:p + oplen] = seq
        end = len(buf)
    # Merge equal adjacent VALs, scanning up to five opcodes from the one before the change.
    q = prev if prev >= 0 else HEADER_BYTES
    scan = 5
    while q < end and scan:
        scan -= 1
        c = buf[q]
        if c < 0x80:
            q += 1 if c < 0x40 else 2
            continue
        if q + 1 < end and buf[q + 1] >= 0x80:
            c2 = buf[q + 1]
            if (c >> 2) & 0x1F == (c2 >> 2) & 0x1F:
                run = (c & 3) + (c2 & 3) + 2
                if run <= 4:
                    buf[q + 1] = _val(((c >> 2) & 0x1F) + 1, run)
                    del buf[q]
                    end -= 1
                    continue
        q += 1
    buf[_CACHE_STALE_BYTE] |= 0x80
    if prev >= 0 and prev_first >= 0:
        hint.at, hint.first, hint.before = prev, prev_first, before
    else:  # the change was at the first opcode, or the one before it is not known
        hint.at, hint.first, hint.before = HEADER_BYTES, 0, -1
    return 1


def _promoted(buf: bytearray) -> bytearray:
    """Redis's hllSparseToDense: the header kept (cached cardinality too), the encoding dense;
    one spare zero byte at the end, as the register macros read one past the last."""
    try:
        raw = _sparse_raw(buf)
    except _Corrupt:
        raise CommandError(INVALID_HLL) from None
    dense = bytearray(buf[:HEADER_BYTES])
    dense[4] = ENCODING_DENSE
    dense += _dense_data(raw)
    dense.append(0)
    return dense


def _dense_set(buf: bytearray, index: int, count: int) -> int:
    """Redis's hllDenseSet on `buf` (a dense HLL and one spare byte): the register becomes
    `count` if that is more; the first byte offset changed (a register spans two), or -1."""
    bit = index * REGISTER_BITS
    b = HEADER_BYTES + (bit >> 3)
    fb = bit & 7
    if ((buf[b] >> fb) | (buf[b + 1] << (8 - fb))) & 0x3F >= count:
        return -1
    buf[b] = (buf[b] & ~(0x3F << fb) | (count << fb)) & 0xFF
    buf[b + 1] = (buf[b + 1] & ~(0x3F >> (8 - fb)) | (count >> (8 - fb))) & 0xFF
    return b


# ---- storing: the change as splices of the old string ----


def _stretch(old: bytes, new: bytes) -> list[object]:
    """One splice [offset, removed, inserted] turning `old` into `new` (they differ): the
    stretch between their common prefix and common suffix."""
    low, high = 0, min(len(old), len(new))
    while low < high:  # the longest common prefix, by bisection on slices
        mid = (low + high + 1) // 2
        if old[:mid] == new[:mid]:
            low = mid
        else:
            high = mid - 1
    prefix = low
    low, high = 0, min(len(old), len(new)) - prefix
    while low < high:
        mid = (low + high + 1) // 2
        if old[len(old) - mid:] == new[len(new) - mid:]:
            low = mid
        else:
            high = mid - 1
    suffix = low
    return [prefix, len(old) - prefix - suffix, new[prefix:len(new) - suffix]]


def _runs(new: bytes, offsets: list[int], gap: int = 4) -> list[object]:
    """Splices overwriting the bytes of `new` at these offsets (each with the byte after it,
    a register spanning two), near ones joined (a splice's framing costs a few bytes)."""
    splices: list[object] = []
    start = stop = -1
    for offset in sorted(offsets):
        if start >= 0 and offset <= stop + gap:
            stop = max(stop, min(offset + 2, len(new)))
            continue
        if start >= 0:
            splices += [start, stop - start, new[start:stop]]
        start, stop = offset, min(offset + 2, len(new))
    if start >= 0:
        splices += [start, stop - start, new[start:stop]]
    return splices


def _blocks(old: bytes, new: bytes, block: int = 32) -> list[object]:
    """Splices overwriting the blocks of `new` (as long as `old`) that differ from `old`."""
    splices: list[object] = []
    start = stop = -1
    for offset in range(0, len(new), block):
        if old[offset:offset + block] == new[offset:offset + block]:
            continue
        if start >= 0 and offset == stop:
            stop = min(offset + block, len(new))
            continue
        if start >= 0:
            splices += [start, stop - start, new[start:stop]]
        start, stop = offset, min(offset + block, len(new))
    if start >= 0:
        splices += [start, stop - start, new[start:stop]]
    return splices


def _store(state: KVState, key: bytes, old: bytes | None, new: bytes,
           splices: list[object] | None = None) -> None:
    if old is None:
        state.write(key, new)
    elif old != new:
        if splices is None:
            splices = (_blocks(old, new) if len(old) == len(new) == DENSE_BYTES
                       else _stretch(old, new))
        state.splice_string(key, splices)


# ---- the commands ----


def parse_pfadd(argv: list[bytes]) -> tuple[bytes, list[bytes]]:
    return argv[1], argv[2:]


def run_pfadd(state: KVState, args: tuple[bytes, list[bytes]], time_ms: int) -> int:
    key, elements = args
    old = state.get(key, time_ms)  # WRONGTYPE for another type
    if old is None:
        buf = bytearray(EMPTY_SPARSE)
        encoding = ENCODING_SPARSE
    else:
        encoding = _hll_or_error(old)
        buf = bytearray(old)
        if encoding == ENCODING_DENSE:
            buf.append(0)  # the spare byte the register macros read past the last register
    changed: list[int] = []  # dense: the offsets of registers changed
    hint = _Hint()
    updated = old is None
    for element in elements:
        index, count = pattern(element)
        if encoding == ENCODING_SPARSE:
            try:
                result = _sparse_set(buf, index, count, hint)
            except _Corrupt:
                raise CommandError(INVALID_HLL) from None
            if result != _PROMOTE:
                updated = updated or result == 1
                continue
            buf = _promoted(buf)
            encoding = ENCODING_DENSE
        offset = _dense_set(buf, index, count) if encoding == ENCODING_DENSE else -1
        if offset >= 0:
            updated = True
            changed.append(offset)
    if not updated:
        return 0
    if encoding == ENCODING_DENSE:
        if buf[_CACHE_STALE_BYTE] & 0x80 == 0:
            buf[_CACHE_STALE_BYTE] |= 0x80
            changed.append(_CACHE_STALE_BYTE - 1)
        new = bytes(buf[:DENSE_BYTES])
        if old is not None and old[4] == ENCODING_DENSE:
            _store(state, key, old, new, _runs(new, changed))
            return 1
    else:
        buf[_CACHE_STALE_BYTE] |= 0x80
        new = bytes(buf)
    _store(state, key, old, new)
    return 1


def _registers_of(state: KVState, keys: list[bytes], time_ms: int) -> tuple[int, bool]:
    """The register by register maximum of the HLLs at `keys` (absent ones count as empty),
    as an integer of 16384 bytes, and whether one of them is dense. Errors in key order, as
    Redis checks and merges one key after another."""
    merged = 0
    dense = False
    for key in keys:
        value = state.get(key, time_ms)
        if value is None:
            continue
        dense = _hll_or_error(value) == ENCODING_DENSE or dense
        raw = int.from_bytes(_raw_of(value), "little")
        merged = _raw_max(merged, raw) if merged else raw
    return merged, dense


def run_pfcount(state: KVState, keys: list[bytes], time_ms: int) -> int:
    if len(keys) > 1:
        merged, _dense = _registers_of(state, keys, time_ms)
        return estimate(merged.to_bytes(REGISTERS, "little"))
    value = state.get(keys[0], time_ms)
    if value is None:
        return 0
    _hll_or_error(value)
    if value[_CACHE_STALE_BYTE] & 0x80 == 0:  # a valid cached cardinality: Redis answers it
        return int.from_bytes(value[8:16], "little")
    return estimate(_raw_of(value))


def run_pfmerge(state: KVState, keys: list[bytes], time_ms: int) -> object:
    merged, use_dense = _registers_of(state, keys, time_ms)  # the destination is keys[0]
    key = keys[0]
    old = state.get(key, time_ms)
    buf = bytearray(EMPTY_SPARSE if old is None else old)
    raw = merged.to_bytes(REGISTERS, "little")
    if use_dense and buf[4] == ENCODING_SPARSE:
        buf = _promoted(buf)
    if buf[4] == ENCODING_SPARSE:
        hint = _Hint()
        for found in _NONZERO.finditer(raw):  # registers above zero, ascending, as Redis
            index = found.start()
            try:
                result = _sparse_set(buf, index, raw[index], hint)
            except _Corrupt:
                raise CommandError(INVALID_HLL) from None
            if result == _PROMOTE:
                buf = _promoted(buf)
                break
    if buf[4] == ENCODING_DENSE:
        # Every register becomes the maximum (the destination's own registers are in it).
        buf = bytearray(buf[:HEADER_BYTES]) + _dense_data(raw)
    buf[_CACHE_STALE_BYTE] |= 0x80
    _store(state, key, old, bytes(buf))
    return OK


def debug_refusal(name: str) -> str:
    return (f"ERR {name.upper()} is not supported by replikv (a Redis test hook); "
            "GET returns an HLL's bytes, in Redis's encoding")
