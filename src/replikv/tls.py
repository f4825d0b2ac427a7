"""TLS: the SSL contexts of a node's three ports and of replikv's own tools, and a local
certificate authority for `replikv cluster up --tls`.

A node given a certificate, its key and the cluster's CA certificate (`tls_cert_file`,
`tls_key_file`, `tls_ca_cert_file`) speaks TLS on every port, and only TLS:

- client port and admin API: the node presents its certificate; a client's certificate is
  asked for, and must be signed by the CA, only with `tls_auth_clients`;
- peer links: mutual TLS. Each side presents its certificate and accepts only one signed by
  the cluster's CA, so a process without such a certificate cannot even begin a handshake.

A certificate is checked against the CA, not against a host name: members and tools reach
each other by whatever address they were given (an IP address, a name, loopback), and the CA
is what says who belongs to the cluster. The contexts are built when the node starts, so a
missing or unreadable file, or a key that does not match its certificate, stops it at once
with a message saying which (TlsError).

`make_local_ca` writes a CA and one certificate per node for a local cluster, with the
`cryptography` package; production clusters bring their own.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# TLS 1.2 is what redis-cli and every current client library speak at the least.
MIN_TLS_VERSION = ssl.TLSVersion.TLSv1_2
LOCAL_CA_DAYS = 825  # what browsers accept for a server certificate's validity
# A TLS handshake not finished by then is abandoned (asyncio's default is 60 s): connections
# that never finish one hold a file descriptor and are not yet counted as clients.
TLS_HANDSHAKE_TIMEOUT_S = 10.0


class TlsError(ValueError):
    """A TLS setting that cannot be used (the message says which file and why)."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert_file: Path
    key_file: Path
    ca_cert_file: Path


def _load_chain(context: ssl.SSLContext, files: TlsFiles) -> None:
    for path, what in ((files.cert_file, "tls_cert_file"), (files.key_file, "tls_key_file")):
        if not Path(path).is_file():
            raise TlsError(f"{what}: {path} does not exist (or is not a file)")
    try:
        context.load_cert_chain(files.cert_file, files.key_file)
    except ssl.SSLError as e:
        raise TlsError(f"tls_cert_file {files.cert_file} and tls_key_file {files.key_file}: "
                       f"not a PEM certificate and its private key ({e.reason or e})") from None


def _load_ca(context: ssl.SSLContext, ca_file: Path | str, what: str) -> None:
    if not Path(ca_file).is_file():
        raise TlsError(f"{what}: {ca_file} does not exist (or is not a file)")
    try:
        context.load_verify_locations(cafile=str(ca_file))
    except ssl.SSLError as e:
        raise TlsError(f"{what}: {ca_file} holds no PEM CA certificate ({e.reason or e})") \
            from None


def server_context(files: TlsFiles, *, require_client_cert: bool) -> ssl.SSLContext:
    """For the client port and the admin API."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = MIN_TLS_VERSION
    _load_chain(context, files)
    _load_ca(context, files.ca_cert_file, "tls_ca_cert_file")
    context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_NONE
    return context


def peer_contexts(files: TlsFiles) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(accepting, connecting) contexts for peer links: both present this node's certificate
    and require one signed by the cluster's CA."""
    accepting = server_context(files, require_client_cert=True)
    connecting = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    connecting.minimum_version = MIN_TLS_VERSION
    connecting.check_hostname = False  # the CA decides membership, not the address dialled
    connecting.verify_mode = ssl.CERT_REQUIRED
    _load_ca(connecting, files.ca_cert_file, "tls_ca_cert_file")
    _load_chain(connecting, files)
    return accepting, connecting


def handshake_timeout(context: ssl.SSLContext | None) -> float | None:
    """asyncio's ssl_handshake_timeout for a server or connection with `context` (None
    without TLS, where asyncio accepts no other value)."""
    return None if context is None else TLS_HANDSHAKE_TIMEOUT_S


def reload_certificate(files: TlsFiles, contexts: Iterable[ssl.SSLContext]) -> None:
    """Load `files` into the contexts a running node serves with (SIGHUP): new connections get
    the new certificate, and the CA file's certificates are trusted as well as those loaded
    before (a new CA is added first, so that members with old and new certificates can link
    while certificates are replaced one node at a time). Checked on a context of its own
    first: TlsError, and no context changed, if the files cannot be used."""
    server_context(files, require_client_cert=True)
    for context in contexts:
        context.load_cert_chain(files.cert_file, files.key_file)
        context.load_verify_locations(cafile=str(files.ca_cert_file))


def client_context(ca_cert_file: Path | str, cert_file: Path | str | None = None,
                   key_file: Path | str | None = None) -> ssl.SSLContext:
    """For replikv's tools: verify a node's certificate against the CA (not its host name),
    and present a client certificate if one is given (for nodes with tls_auth_clients)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = MIN_TLS_VERSION
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    _load_ca(context, ca_cert_file, "the CA certificate (REPLIKV_TLS_CA_CERT)")
    if cert_file is not None and key_file is not None:
        _load_chain(context, TlsFiles(Path(cert_file), Path(key_file), Path(ca_cert_file)))
    return context


# -- a local CA for `cluster up --tls` -------------------------------------------------------------


def make_local_ca(directory: Path, node_ids: Iterable[str],
                  hosts: Iterable[str] = ("127.0.0.1", "localhost")) -> dict[str, TlsFiles]:
    """A CA (ca.pem, ca-key.pem) and, for each node, a certificate it signed (<id>.pem,
    <id>-key.pem) naming `hosts`, written into `directory` (keys readable by the owner only).
    Files already there are kept, so a restarted cluster keeps its certificates; a node
    without one gets a new one from the existing CA. Returns each node's files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    ca_cert_path, ca_key_path = directory / "ca.pem", directory / "ca-key.pem"
    now = datetime.datetime.now(datetime.UTC)

    def write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
        path.touch(mode=0o600)
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))

    if ca_cert_path.exists() and ca_key_path.exists():
        ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
        loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise TlsError(f"{ca_key_path} is not the EC key this command makes")
        ca_key = loaded
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "replikv local cluster CA")])
        ca_cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=LOCAL_CA_DAYS))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                   .add_extension(x509.KeyUsage(
                       digital_signature=True, key_cert_sign=True, crl_sign=True,
                       content_commitment=False, key_encipherment=False,
                       data_encipherment=False, key_agreement=False, encipher_only=False,
                       decipher_only=False), critical=True)
                   .sign(ca_key, hashes.SHA256()))
        write_key(ca_key_path, ca_key)
        ca_cert_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    out = {}
    for node_id in node_ids:
        cert_path, key_path = directory / f"{node_id}.pem", directory / f"{node_id}-key.pem"
        if not (cert_path.exists() and key_path.exists()):
            key = ec.generate_private_key(ec.SECP256R1())
            cert = (x509.CertificateBuilder()
                    .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)]))
                    .issuer_name(ca_cert.subject).public_key(key.public_key())
                    .serial_number(x509.random_serial_number())
                    .not_valid_before(now - datetime.timedelta(minutes=5))
                    .not_valid_after(now + datetime.timedelta(days=LOCAL_CA_DAYS))
                    .add_extension(x509.SubjectAlternativeName(names), critical=False)
                    .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                                   critical=True)
                    .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                          ExtendedKeyUsageOID.CLIENT_AUTH]),
                                   critical=False)
                    .sign(ca_key, hashes.SHA256()))
            write_key(key_path, key)
            cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        out[node_id] = TlsFiles(cert_path, key_path, ca_cert_path)
    return out


__all__ = ["MIN_TLS_VERSION", "TLS_HANDSHAKE_TIMEOUT_S", "TlsError", "TlsFiles",
           "client_context", "handshake_timeout", "make_local_ca", "peer_contexts",
           "reload_certificate", "server_context"]
