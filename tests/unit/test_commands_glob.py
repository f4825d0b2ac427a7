"""Glob patterns: compared with a direct transcription of Redis's recursive stringmatchlen (the
oracle below, including its quirks), plus documented examples and a backtracking bomb."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replikv.commands import glob
from replikv.commands.glob import GlobPattern, compile_glob


def redis_stringmatch(pattern: bytes, string: bytes) -> bool:
    """Redis's stringmatchlen (case-sensitive), step for step. C strings end in NUL, which
    the original reads past the pattern's length in two places; `at` reproduces that."""

    def at(i: int) -> int:
        return pattern[i] if i < len(pattern) else 0

    skip_longer = [False]

    def match(p: int, s: int) -> bool:
        while len(pattern) - p and len(string) - s:
            c = pattern[p]
            if c == ord("*"):
                while len(pattern) - p and at(p + 1) == ord("*"):
                    p += 1
                if len(pattern) - p == 1:
                    return True
                while len(string) - s:
                    if match(p + 1, s):
                        return True
                    if skip_longer[0]:
                        return False
                    s += 1
                skip_longer[0] = True
                return False
            if c == ord("?"):
                s += 1
            elif c == ord("["):
                p += 1
                negate = at(p) == ord("^")
                if negate:
                    p += 1
                matched = False
                while True:
                    if at(p) == ord("\\") and len(pattern) - p >= 2:
                        p += 1
                        matched |= pattern[p] == string[s]
                    elif at(p) == ord("]"):
                        break
                    elif len(pattern) - p == 0:
                        p -= 1
                        break
                    elif len(pattern) - p >= 3 and pattern[p + 1] == ord("-"):
                        low, high = sorted((pattern[p], pattern[p + 2]))
                        p += 2
                        matched |= low <= string[s] <= high
                    else:
                        matched |= pattern[p] == string[s]
                    p += 1
                if negate:
                    matched = not matched
                if not matched:
                    return False
                s += 1
            else:
                if c == ord("\\") and len(pattern) - p >= 2:
                    p += 1
                if pattern[p] != string[s]:
                    return False
                s += 1
            p += 1
            if len(string) - s == 0:
                while at(p) == ord("*"):
                    p += 1
                break
        return len(pattern) - p == 0 and len(string) - s == 0

    return match(0, 0)


PATTERN_BYTES = st.sampled_from(list(b"ab*?[]^-\\"))
STRING_BYTES = st.sampled_from(list(b"ab]^-\\*"))


@settings(max_examples=3000, deadline=None)
@given(
    st.lists(PATTERN_BYTES, max_size=9).map(bytes),
    st.lists(STRING_BYTES, max_size=7).map(bytes),
)
def test_matches_redis_stringmatchlen(pattern: bytes, key: bytes) -> None:
    assert GlobPattern(pattern).matches(key) == redis_stringmatch(pattern, key)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=8), st.binary(max_size=8))
def test_matches_redis_on_arbitrary_bytes(pattern: bytes, key: bytes) -> None:
    assert GlobPattern(pattern).matches(key) == redis_stringmatch(pattern, key)


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        (b"h?llo", b"hello", True),
        (b"h?llo", b"hllo", False),
        (b"h*llo", b"hllo", True),
        (b"h*llo", b"heeeello", True),
        (b"h[ae]llo", b"hallo", True),
        (b"h[ae]llo", b"hillo", False),
        (b"h[^e]llo", b"hallo", True),
        (b"h[^e]llo", b"hello", False),
        (b"h[a-b]llo", b"hbllo", True),
        (b"h[b-a]llo", b"hallo", True),  # reversed range is swapped
        (b"h\\*llo", b"h*llo", True),
        (b"h\\*llo", b"hello", False),
        (b"[\\]]", b"]", True),
        (b"[a-]", b"]", True),  # Redis reads this as the range ']'..'a'
        (b"[abc", b"b", True),  # an unclosed class runs to the end
        (b"[]", b"]", False),  # an empty class matches nothing
        (b"[^]", b"x", True),
        (b"a\\", b"a\\", True),  # a trailing backslash is literal
        (b"*", b"", False),  # the matcher itself: empty keys match only the empty pattern
        (b"", b"", True),
        (b"**a**", b"xa", True),
        (b"a*", b"a", True),
        (b"*b", b"\n\nb", True),  # '?' and '*' match newlines too
        (b"?", b"\n", True),
        (b"\x00*", b"\x00abc", True),
    ],
)
def test_examples(pattern: bytes, key: bytes, expected: bool) -> None:
    assert GlobPattern(pattern).matches(key) is expected
    assert redis_stringmatch(pattern, key) is expected


def test_star_alone_matches_every_key_including_empty() -> None:
    matches = compile_glob(b"*")
    assert matches(b"") and matches(b"anything")


def test_no_catastrophic_backtracking() -> None:
    pattern = b"*a" * 30 + b"*b"
    key = b"a" * 20_000
    started = time.perf_counter()
    assert not compile_glob(pattern)(key)
    assert compile_glob(pattern)(key + b"b")
    assert time.perf_counter() - started < 2.0


def test_cache_is_bounded_and_skips_long_patterns() -> None:
    glob._cache.clear()
    for i in range(glob.GLOB_CACHE_ENTRIES_MAX + 50):
        compile_glob(b"p%d*" % i)
    assert len(glob._cache) == glob.GLOB_CACHE_ENTRIES_MAX
    long_pattern = b"x" * (glob.GLOB_CACHE_PATTERN_BYTES_MAX + 1)
    assert compile_glob(long_pattern)(long_pattern)
    assert long_pattern not in glob._cache
    assert compile_glob(b"again*") is compile_glob(b"again*")  # served from the cache
