"""The cluster password on the client side: where replikv's own commands find it.

A node with `requirepass` answers NOAUTH until a connection gives the password, and its admin
API's backup and POST endpoints answer 401 without it (HTTP Basic, user `default`). replikv's
commands (`member`, `backup`, `bench`, `cluster partition`, ...) read it from the environment
variable REPLIKV_PASSWORD, never from a flag, so that it stays out of `ps` listings and shell
history; Python programs pass it to `replikv.Client(password=...)` as to redis-py.
"""

from __future__ import annotations

import base64
import os

PASSWORD_ENV = "REPLIKV_PASSWORD"


def env_password() -> str | None:
    """The password in REPLIKV_PASSWORD, or None when it is unset or empty."""
    return os.environ.get(PASSWORD_ENV) or None


def basic_authorization(password: str) -> str:
    """The value of an Authorization header that gives `password` as user `default`."""
    token = base64.b64encode(b"default:" + password.encode()).decode("ascii")
    return f"Basic {token}"


def authorization_headers(password: str | None = None) -> dict[str, str]:
    """Headers for a request to a node's admin API: Authorization with `password`, else with
    REPLIKV_PASSWORD's; none when neither is set."""
    password = password or env_password()
    return {"Authorization": basic_authorization(password)} if password else {}


__all__ = ["PASSWORD_ENV", "authorization_headers", "basic_authorization", "env_password"]
