"""TLS settings and contexts (replikv.tls): the local CA `cluster up --tls` makes, the errors a
node refuses to start with, and how replikv's commands pick TLS up from the environment.
The handshakes themselves, between real processes: tests/integration/test_tls.py."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from replikv.client.credentials import admin_url, redis_tls_kwargs
from replikv.config import ConfigError, load_settings
from replikv.tls import (
    TlsError,
    TlsFiles,
    client_context,
    make_local_ca,
    peer_contexts,
    server_context,
)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TlsFiles]:
    return make_local_ca(tmp_path_factory.mktemp("tls"), ["n1", "n2"])


def test_the_local_ca_keeps_its_files_and_signs_new_nodes(tmp_path: Path) -> None:
    first = make_local_ca(tmp_path, ["n1"])
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert sorted(before) == ["ca-key.pem", "ca.pem", "n1-key.pem", "n1.pem"]
    for key in ("ca-key.pem", "n1-key.pem"):
        assert (tmp_path / key).stat().st_mode & 0o077 == 0, key  # the owner's only
    again = make_local_ca(tmp_path, ["n1", "n2"])
    assert again["n1"] == first["n1"]
    assert {p: (tmp_path / p).read_bytes() for p in before} == before  # nothing rewritten
    # n2's certificate comes from the same CA: a context with n1's files accepts it.
    server_context(again["n2"], require_client_cert=True)
    peer_contexts(again["n2"])


async def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readexactly(4))
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server)
    port = listener.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        writer.close()
    finally:
        listener.close()


def test_peer_links_accept_only_certificates_the_cluster_ca_signed(ca, tmp_path: Path) -> None:
    accepting, _ = peer_contexts(ca["n1"])
    _, connecting = peer_contexts(ca["n2"])
    asyncio.run(_handshake(accepting, connecting))
    foreign = make_local_ca(tmp_path / "other", ["n2"])["n2"]
    _, stranger = peer_contexts(foreign)
    with pytest.raises(ssl.SSLError):  # the stranger does not trust our certificate
        asyncio.run(_handshake(accepting, stranger))
    # Nor do we trust one its CA signed, presented as a client certificate to our peer port.
    trusting = client_context(ca["n1"].ca_cert_file, foreign.cert_file, foreign.key_file)
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
        asyncio.run(_handshake(accepting, trusting))


def test_bad_files_are_refused_naming_the_setting(ca, tmp_path: Path) -> None:
    good = ca["n1"]
    missing = TlsFiles(tmp_path / "nope.pem", good.key_file, good.ca_cert_file)
    with pytest.raises(TlsError, match="tls_cert_file: .*nope.pem does not exist"):
        server_context(missing, require_client_cert=False)
    mismatched = TlsFiles(good.cert_file, ca["n2"].key_file, good.ca_cert_file)
    with pytest.raises(TlsError, match="not a PEM certificate and its private key"):
        peer_contexts(mismatched)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(TlsError, match="tls_ca_cert_file: .*junk.pem holds no PEM CA"):
        server_context(TlsFiles(good.cert_file, good.key_file, junk), require_client_cert=True)
    with pytest.raises(TlsError, match="REPLIKV_TLS_CA_CERT"):
        client_context(tmp_path / "absent.pem")


def settings(tmp_path: Path, toml: str):
    config = tmp_path / "n1.toml"
    config.write_text('id = "n1"\ndata_dir = "d"\nlisten = "127.0.0.1:7001"\n'
                      'peer_listen = "127.0.0.1:7101"\npeers = "n1=127.0.0.1:7101"\n' + toml)
    return load_settings(config, {})


def test_tls_settings_come_as_three_files_or_not_at_all(ca, tmp_path: Path) -> None:
    f = ca["n1"]
    assert settings(tmp_path, "").tls_files() is None
    full = settings(tmp_path, f'tls_cert_file = "{f.cert_file}"\ntls_key_file = "{f.key_file}"\n'
                              f'tls_ca_cert_file = "{f.ca_cert_file}"\ntls_auth_clients = true\n')
    assert full.tls_files() == f and full.tls_auth_clients
    with pytest.raises(ConfigError, match="all three"):
        settings(tmp_path, f'tls_cert_file = "{f.cert_file}"\n')
    with pytest.raises(ConfigError, match="tls_auth_clients needs TLS"):
        settings(tmp_path, "tls_auth_clients = true\n")


def test_a_node_with_an_unusable_certificate_does_not_start(ca, tmp_path: Path) -> None:
    f = ca["n1"]
    done = subprocess.run(
        [sys.executable, "-m", "replikv", "node", "--id", "n1", "--data-dir", str(tmp_path / "d"),
         "--listen", "127.0.0.1:1", "--peer-listen", "127.0.0.1:2", "--peers", "n1=127.0.0.1:2",
         "--tls-cert-file", str(f.cert_file), "--tls-key-file", str(ca["n2"].key_file),
         "--tls-ca-cert-file", str(f.ca_cert_file)],
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1, done
    assert "cannot start: tls_cert_file" in done.stderr and "private key" in done.stderr
    assert not (tmp_path / "d").exists()  # refused before touching the data dir


def test_replikv_commands_take_tls_from_the_environment(ca, monkeypatch) -> None:
    monkeypatch.delenv("REPLIKV_TLS_CA_CERT", raising=False)
    assert redis_tls_kwargs() == {} and admin_url("h:1", "/status") == "http://h:1/status"
    monkeypatch.setenv("REPLIKV_TLS_CA_CERT", str(ca["n1"].ca_cert_file))
    kwargs = redis_tls_kwargs()
    assert kwargs["ssl"] and kwargs["ssl_ca_certs"] == str(ca["n1"].ca_cert_file)
    assert kwargs["ssl_certfile"] is None
    assert admin_url("h:1", "/status") == "https://h:1/status"


def test_a_reload_takes_a_new_certificate_or_changes_nothing(ca, tmp_path: Path) -> None:
    from replikv.tls import reload_certificate

    contexts = [server_context(ca["n1"], require_client_cert=False), *peer_contexts(ca["n1"])]
    mismatched = TlsFiles(ca["n2"].cert_file, ca["n1"].key_file, ca["n1"].ca_cert_file)
    with pytest.raises(TlsError):
        reload_certificate(mismatched, contexts)
    # Nothing changed: n1's own client still completes handshakes with these contexts.
    asyncio.run(_handshake(contexts[1], peer_contexts(ca["n2"])[1]))
    reload_certificate(ca["n2"], contexts)
    asyncio.run(_handshake(contexts[1], peer_contexts(ca["n1"])[1]))


def test_a_peer_port_drops_a_connection_that_never_finishes_its_tls_handshake(ca, monkeypatch):
    """Someone who connects and sends nothing (or half a handshake) holds the connection only
    for TLS_HANDSHAKE_TIMEOUT_S (asyncio's own default is 60 s), and gets no message in."""
    import replikv.tls
    from replikv.config import Address
    from replikv.limits import Limits
    from replikv.local_cluster import free_ports
    from replikv.server.peer_transport import PeerTransport

    monkeypatch.setattr(replikv.tls, "TLS_HANDSHAKE_TIMEOUT_S", 0.3)

    async def main() -> bytes:
        (port,) = free_ports(1, "127.0.0.1")
        got: list = []
        transport = PeerTransport(node_id="n1", cluster_id="c", limits=Limits(),
                                  peers={"n1": Address("127.0.0.1", port)},
                                  on_message=lambda src, m: got.append(m),
                                  tls=peer_contexts(ca["n1"]))
        await transport.start(Address("127.0.0.1", port))
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"\x16\x03\x01")  # the first bytes of a ClientHello, and no more
            answer = await asyncio.wait_for(reader.read(), 5.0)  # b"" once it is dropped
            writer.close()
            assert got == []
            return answer
        finally:
            await transport.close()

    assert asyncio.run(main()) == b""
