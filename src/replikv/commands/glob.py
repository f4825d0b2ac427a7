"""Redis glob patterns (KEYS, SCAN MATCH) on bytes, without catastrophic backtracking.

Redis matches keys with `stringmatchlen`: `*` any run of bytes, `?` one byte, `[abc]`, `[^abc]`
and `[a-z]` classes, `\\x` escapes. Clients rely on its quirks, so the pattern is tokenized the
way that function walks it: a reversed range `[z-a]` is swapped, an unclosed `[` class runs to
the end of the pattern, `[a-]` is the range from `]` to `a`, a trailing `\\` is literal, and an
empty string matches only the empty pattern (`KEYS *` and `SCAN MATCH *` special-case `*`,
see `compile_glob`).

Every token other than `*` matches exactly one byte, so the pattern splits at its stars into
fixed-width segments. The first segment must match at the start, the last at the end, and each
middle one is found at its leftmost position after the previous one: taking the leftmost match
never loses a match, because the star before the next segment can absorb any extra bytes. Each
segment is a quantifier-free regex, so the whole match costs O(len(key) * len(pattern)) in C,
where a single regex such as `.*a.*a.*a.*b` would backtrack exponentially.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

# Compiled patterns are cached because SCAN clients repeat the same MATCH on every call. Long
# patterns are rare and costly to keep, so only short ones are cached, and the cache is bounded.
GLOB_CACHE_ENTRIES_MAX = 256
GLOB_CACHE_PATTERN_BYTES_MAX = 1024

_STAR = None  # token for `*`; every other token is a regex fragment matching one byte


def _byte_regex(byte: int) -> bytes:
    # \xhh is safe inside and outside a class for every byte, NUL and newline included.
    return b"\\x%02x" % byte


def _parse_class(pattern: bytes, i: int) -> tuple[bytes, int]:
    """Parse a class whose `[` is at pattern[i - 1]; return its regex and the index of the last
    byte it consumed, as Redis's loop leaves it."""
    n = len(pattern)
    negate = i < n and pattern[i] == 0x5E  # '^'
    if negate:
        i += 1
    ranges: list[bytes] = []
    while True:
        if i < n and pattern[i] == 0x5C and n - i >= 2:  # '\' escapes the next byte
            i += 1
            ranges.append(_byte_regex(pattern[i]))
        elif i < n and pattern[i] == 0x5D:  # ']'
            break
        elif i >= n:
            # Unclosed class: Redis steps back onto the last byte and ends the class there.
            i -= 1
            break
        elif n - i >= 3 and pattern[i + 1] == 0x2D:  # 'a-z', also 'a-]' as Redis reads it
            low, high = sorted((pattern[i], pattern[i + 2]))
            ranges.append(_byte_regex(low) + b"-" + _byte_regex(high))
            i += 2
        else:
            ranges.append(_byte_regex(pattern[i]))
        i += 1
    if not ranges:
        # An empty class matches nothing; negated, it matches any byte.
        return (b"." if negate else b"(?!)"), i
    return b"[" + (b"^" if negate else b"") + b"".join(ranges) + b"]", i


def _tokenize(pattern: bytes) -> list[bytes | None]:
    tokens: list[bytes | None] = []
    n = len(pattern)
    i = 0
    while i < n:
        byte = pattern[i]
        if byte == 0x2A:  # '*'
            if not tokens or tokens[-1] is not _STAR:
                tokens.append(_STAR)
        elif byte == 0x3F:  # '?'
            tokens.append(b".")
        elif byte == 0x5B:  # '['
            fragment, i = _parse_class(pattern, i + 1)
            tokens.append(fragment)
        elif byte == 0x5C and n - i >= 2:  # '\'
            i += 1
            tokens.append(_byte_regex(pattern[i]))
        else:
            tokens.append(_byte_regex(byte))
        i += 1
    return tokens


@dataclass(frozen=True, slots=True)
class _Segment:
    regex: re.Pattern[bytes]
    width: int  # bytes it matches


def _segment(tokens: list[bytes | None]) -> _Segment | None:
    if not tokens:
        return None
    fragments = [token for token in tokens if token is not None]
    return _Segment(re.compile(b"".join(fragments), re.DOTALL), len(fragments))


class GlobPattern:
    """A compiled pattern; `matches(key)` follows Redis's stringmatchlen (case-sensitive)."""

    __slots__ = ("_has_star", "_head", "_middles", "_pattern_empty", "_tail", "_width_min")

    def __init__(self, pattern: bytes) -> None:
        tokens = _tokenize(pattern)
        self._pattern_empty = not pattern
        self._has_star = _STAR in tokens
        pieces: list[list[bytes | None]] = [[]]
        for token in tokens:
            if token is _STAR:
                pieces.append([])
            else:
                pieces[-1].append(token)
        self._head = _segment(pieces[0])
        self._tail = _segment(pieces[-1]) if self._has_star else None
        middles = [_segment(piece) for piece in pieces[1:-1]]
        self._middles = tuple(segment for segment in middles if segment is not None)
        self._width_min = sum(token is not _STAR for token in tokens)

    def matches(self, key: bytes) -> bool:
        if not key:
            return self._pattern_empty
        if len(key) < self._width_min:
            return False
        if not self._has_star:
            return self._head is not None and self._head.regex.fullmatch(key) is not None
        start = 0
        if self._head is not None:
            if self._head.regex.match(key) is None:
                return False
            start = self._head.width
        end = len(key)
        if self._tail is not None:
            end -= self._tail.width
            if end < start or self._tail.regex.fullmatch(key, end) is None:
                return False
        for middle in self._middles:
            found = middle.regex.search(key, start, end)
            if found is None:
                return False
            start = found.end()
        return True


def match_everything(key: bytes) -> bool:
    """The matcher of `*` (KEYS * and SCAN MATCH * take every key, the empty one too)."""
    return True


_GLOB_SPECIAL = frozenset(b"*?[\\")


def literal_prefix(pattern: bytes) -> bytes | None:
    """The prefix of a `prefix*` pattern whose prefix is literal and not empty (the common KEYS
    pattern), else None: such a pattern matches exactly the keys starting with it."""
    prefix = pattern[:-1]
    if not pattern.endswith(b"*") or not prefix or any(b in _GLOB_SPECIAL for b in prefix):
        return None
    return prefix


def _prefix_matcher(pattern: bytes) -> Callable[[bytes], bool] | None:
    prefix = literal_prefix(pattern)
    return None if prefix is None else operator.methodcaller("startswith", prefix)


_cache: dict[bytes, Callable[[bytes], bool]] = {}


def compile_glob(pattern: bytes) -> Callable[[bytes], bool]:
    """Return a predicate for KEYS / SCAN MATCH. The pattern `*` alone matches every key, the
    empty key included, as Redis's KEYS and SCAN special-case it."""
    matcher = _cache.get(pattern)
    if matcher is not None:
        return matcher
    matcher = (match_everything if pattern == b"*"
               else _prefix_matcher(pattern) or GlobPattern(pattern).matches)
    if len(pattern) <= GLOB_CACHE_PATTERN_BYTES_MAX:
        if len(_cache) >= GLOB_CACHE_ENTRIES_MAX:
            # Drop the oldest entry (dicts keep insertion order): simple and bounded.
            del _cache[next(iter(_cache))]
        _cache[pattern] = matcher
    return matcher
