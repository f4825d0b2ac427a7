"""How replikv's own commands reach a cluster that has a password or speaks TLS.

A node with `requirepass` answers NOAUTH until a connection gives the password, and its admin
API's backup and POST endpoints answer 401 without it (HTTP Basic, user `default`). replikv's
commands (`member`, `backup`, `bench`, `cluster partition`, ...) read it from the environment
variable REPLIKV_PASSWORD, never from a flag, so that it stays out of `ps` listings and shell
history; Python programs pass it to `replikv.Client(password=...)` as to redis-py.

The same for TLS: with REPLIKV_TLS_CA_CERT set (the cluster's CA certificate), replikv's
commands speak TLS to the nodes' client ports and HTTPS to their admin APIs, checking each
node's certificate against that CA, and present REPLIKV_TLS_CERT / REPLIKV_TLS_KEY if set (for
nodes with tls_auth_clients).
"""

from __future__ import annotations

import base64
import http.client
import os
import ssl
import urllib.request
from typing import Any

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




# -- TLS ------------------------------------------------------------------------------------------

TLS_CA_CERT_ENV = "REPLIKV_TLS_CA_CERT"
TLS_CERT_ENV = "REPLIKV_TLS_CERT"
TLS_KEY_ENV = "REPLIKV_TLS_KEY"


def env_tls_files() -> tuple[str, str | None, str | None] | None:
    """(CA certificate, client certificate, its key) from REPLIKV_TLS_CA_CERT,
    REPLIKV_TLS_CERT and REPLIKV_TLS_KEY; None when the CA is not set: plain TCP."""
    ca = os.environ.get(TLS_CA_CERT_ENV)
    if not ca:
        return None
    return ca, os.environ.get(TLS_CERT_ENV) or None, os.environ.get(TLS_KEY_ENV) or None


def env_tls_context() -> ssl.SSLContext | None:
    """The context replikv's commands reach TLS nodes with (see replikv.tls.client_context);
    None for plain TCP. TlsError if a file named there cannot be used."""
    files = env_tls_files()
    if files is None:
        return None
    from replikv.tls import client_context

    return client_context(*files)


def redis_tls_kwargs() -> dict[str, Any]:
    """redis-py's keyword arguments for a TLS node, from the same variables ({} without)."""
    files = env_tls_files()
    if files is None:
        return {}
    ca, cert, key = files
    return {"ssl": True, "ssl_ca_certs": ca, "ssl_cert_reqs": "required",
            "ssl_check_hostname": False, "ssl_certfile": cert, "ssl_keyfile": key}


def admin_url(address: str, path: str) -> str:
    """The URL of `path` on the admin API at `address`: https when REPLIKV_TLS_CA_CERT is set."""
    return f"{'https' if env_tls_files() else 'http'}://{address}{path}"


def admin_connection(host: str, port: int, timeout_s: float) -> http.client.HTTPConnection:
    """An HTTP(S) connection to an admin API, as admin_url decides."""
    context = env_tls_context()
    if context is None:
        return http.client.HTTPConnection(host, port, timeout=timeout_s)
    return http.client.HTTPSConnection(host, port, timeout=timeout_s, context=context)


def admin_urlopen(request: str | urllib.request.Request, timeout_s: float) -> Any:
    """urllib's urlopen with the TLS context of replikv's commands."""
    return urllib.request.urlopen(request, timeout=timeout_s, context=env_tls_context())


__all__ = ["PASSWORD_ENV", "TLS_CA_CERT_ENV", "TLS_CERT_ENV", "TLS_KEY_ENV", "admin_connection",
           "admin_url", "admin_urlopen", "authorization_headers", "basic_authorization",
           "env_password", "env_tls_context", "env_tls_files", "redis_tls_kwargs"]
