"""TLS material: the configured certificate, or a self-signed one generated into the spool.

No key ships in the repository; on first start without ``[tls]`` keys a fresh EC key and a
certificate for the listening addresses are written to ``<spool>/tls/`` (key mode 0600).
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from control.config import Config

log = logging.getLogger("chorus.tls")

VALIDITY_DAYS = 825  # the longest validity browsers and most stacks still accept


def ensure_certificate(config: Config) -> tuple[Path, Path]:
    if config.tls.certificate is not None and config.tls.private_key is not None:
        return config.tls.certificate, config.tls.private_key
    directory = config.server.spool_dir / "tls"
    cert_path = directory / "chorus.crt"
    key_path = directory / "chorus.key"
    if cert_path.is_file() and key_path.is_file():
        return cert_path, key_path
    directory.mkdir(parents=True, exist_ok=True)
    hosts = {a.host for a in config.sip.listen}
    if config.sip.advertised_address:
        hosts.add(config.sip.advertised_address)
    generate_self_signed(cert_path, key_path, sorted(hosts))
    log.info("generated a self-signed certificate in %s", directory)
    return cert_path, key_path


def generate_self_signed(cert_path: Path, key_path: Path, addresses: list[str]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chorus")])
    now = datetime.datetime.now(datetime.UTC)
    alt_names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    for address in addresses:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(address)))
        except ValueError:
            alt_names.append(x509.DNSName(address))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALIDITY_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    temporary = key_path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(key_bytes)
    os.replace(temporary, key_path)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
