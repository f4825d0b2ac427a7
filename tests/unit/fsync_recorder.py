"""Records which files the code under test fsyncs (by path), for durability-order tests."""

from __future__ import annotations

import os

import pytest


def record_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From now on every os.fsync and os.fdatasync (the log's appends use the latter) still
    happens, and appends the path of its file here."""
    calls: list[str] = []

    def recording(real):
        def call(fd: int) -> None:
            calls.append(os.readlink(f"/proc/self/fd/{fd}"))
            real(fd)
        return call

    monkeypatch.setattr(os, "fsync", recording(os.fsync))
    monkeypatch.setattr(os, "fdatasync", recording(os.fdatasync))
    return calls
