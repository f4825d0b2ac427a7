"""Options shared by every test directory."""

from __future__ import annotations


def pytest_addoption(parser):
    parser.addoption("--soak", action="store_true", default=False,
                     help="run the long soaks (e.g. 20,000 simulator seeds)")
