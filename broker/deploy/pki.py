"""A small certificate authority for one deployment (ECDSA P-256, X.509 via ``cryptography``).

The CA's key stays in its own directory, never in a machine's bundle.  Re-running ``ion deploy``
with the same CA directory keeps every certificate that is still right (same CA, same name,
every address it needs, not near expiry), so regenerating ACLs after an ION changes does not
force new keys onto every machine.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ion.errors import ConfigError

log = logging.getLogger(__name__)

CA_DAYS = 3650
LEAF_DAYS = 825  # what browsers accept; plenty for a fleet, short enough to make rotation real
RENEW_BEFORE = dt.timedelta(days=30)


@dataclass(frozen=True, slots=True)
class Issued:
    cert_pem: bytes
    key_pem: bytes
    reused: bool = False


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_secret(path: Path, data: bytes) -> None:
    """Write a private key readable by its owner only (created so, never widened later)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    path.chmod(0o600)


class CertificateAuthority:
    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self._key = key
        self.cert = cert

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @classmethod
    def load_or_create(
        cls, ca_dir: Path, *, now: dt.datetime, name: str = "ION deploy CA"
    ) -> tuple[CertificateAuthority, bool]:
        """The CA in ``ca_dir`` (``ca.key``, ``ca.crt``), created when absent; True if new."""
        key_file, cert_file = ca_dir / "ca.key", ca_dir / "ca.crt"
        if key_file.exists() or cert_file.exists():
            try:
                key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
                cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
            except (OSError, ValueError, TypeError) as exc:
                raise ConfigError(f"cannot load the CA in {ca_dir}: {exc}") from None
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ConfigError(f"{key_file}: not an ECDSA key")
            if _spki(key.public_key()) != _spki(cert.public_key()):
                raise ConfigError(f"{key_file} and {cert_file} do not belong together")
            return cls(key, cert), False
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        ca_dir.mkdir(parents=True, exist_ok=True)
        ca_dir.chmod(0o700)
        write_secret(key_file, _key_pem(key))
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        log.info("created a new CA in %s", ca_dir)
        return cls(key, cert), True

    def issue(
        self, common_name: str, *, now: dt.datetime, server_names: Sequence[str] = ()
    ) -> Issued:
        """A new key and certificate; a server certificate when ``server_names`` are given."""
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=LEAF_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH]
                    if server_names
                    else [ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server_names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_general_name(n) for n in server_names]), False
            )
        cert = builder.sign(self._key, hashes.SHA256())
        return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))

    def still_good(
        self,
        cert_pem: bytes,
        key_pem: bytes,
        common_name: str,
        *,
        now: dt.datetime,
        server_names: Sequence[str] = (),
    ) -> bool:
        """Whether an earlier certificate can be kept as it is."""
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
            key = serialization.load_pem_private_key(key_pem, password=None)
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        if _spki(cert.public_key()) != _spki(key.public_key()):
            return False
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if [c.value for c in cns] != [common_name]:
            return False
        if cert.not_valid_after_utc - RENEW_BEFORE < now:
            return False
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return not server_names
        return set(san) == {_general_name(n) for n in server_names}


def _spki(key: object) -> bytes:
    assert isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey)
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def issue_or_keep(
    ca: CertificateAuthority,
    cert_file: Path,
    key_file: Path,
    common_name: str,
    *,
    now: dt.datetime,
    server_names: Sequence[str] = (),
    force: bool = False,
) -> Issued:
    """The certificate already at ``cert_file``/``key_file`` when still right, else a new one."""
    if not force and cert_file.exists() and key_file.exists():
        cert_pem, key_pem = cert_file.read_bytes(), key_file.read_bytes()
        if ca.still_good(cert_pem, key_pem, common_name, now=now, server_names=server_names):
            return Issued(cert_pem, key_pem, reused=True)
    return ca.issue(common_name, now=now, server_names=server_names)
