"""A throwaway certificate authority, made with ``cryptography``, for the TLS servers the
comparison (compare/smtpserver.py) and the tests (tests/smtpd_fixtures.py) run.

``CA(directory)`` writes its certificate to ``directory/ca.pem`` (what clients trust through a
``cafile``); ``issue`` signs a server certificate for DNS names and addresses, each in
subjectAltName (RFC 6125 §6.4), the first also the subject's common name.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PEM = serialization.Encoding.PEM


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePublicKey, expired: bool
) -> x509.CertificateBuilder:
    """Valid from five minutes ago for a day; ``expired``: for a day that ended yesterday."""
    now = datetime.datetime.now(datetime.UTC)
    if expired:
        now -= datetime.timedelta(days=2)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


class CA:
    """A CA whose certificate is ``cafile``; ``issue`` makes server certificates it signs."""

    def __init__(self, directory: Path, common_name: str = "wiretwin CA") -> None:
        self.directory = directory
        self.cafile = directory / "ca.pem"
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        # RFC 5280 §4.2.1.3 / §4.2.1.9: a CA certificate signs certificates and CRLs.
        usage = x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=True,
            crl_sign=True,
            encipher_only=False,
            decipher_only=False,
        )
        cert = (
            _builder(self._name, self._name, self._key.public_key(), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(usage, critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.cafile.write_bytes(cert.public_bytes(PEM))

    def issue(
        self, names: list[str], stem: str = "server", *, expired: bool = False
    ) -> tuple[Path, Path]:
        """A server certificate for ``names`` -> (certfile, keyfile), written as ``stem``.pem
        and ``stem``.key in the CA's directory."""
        key = ec.generate_private_key(ec.SECP256R1())
        alt: list[x509.GeneralName] = []
        for name in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt.append(x509.DNSName(name))
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
        cert = (
            _builder(subject, self._name, key.public_key(), expired)
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        certfile, keyfile = self.directory / f"{stem}.pem", self.directory / f"{stem}.key"
        certfile.write_bytes(cert.public_bytes(PEM))
        keyfile.write_bytes(
            key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        return certfile, keyfile


def server_context(certfile: Path, keyfile: Path) -> ssl.SSLContext:
    """A server-side TLS context presenting ``certfile``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    return context
