"""The maker's manifest keys on disk: the offline root, the online signing key, its certificate.

A key directory holds some of these files:

| file                | what                                               | who reads it      |
|---------------------|----------------------------------------------------|-------------------|
| `root.key`          | the root's private key (PEM, mode 0600)            | `caas keys` only  |
| `root.pub`          | the root's public key (base64 raw), pinned in cars | platform, factory |
| `signing.key`       | the online signing key (PEM, mode 0600)            | platform          |
| `signing.cert.json` | its `SigningCertificate`, signed by the root       | platform          |
| `demo-root.key`     | the demo's root private key (`ensure_demo_keys`)   | `caas keys` only  |

The ceremony: `caas keys init-root --out OFFLINE` once, on a machine that stays offline; then
every few months `caas keys issue-signing --root OFFLINE/root.key --out KEYS` and give KEYS
(`root.pub`, `signing.key`, `signing.cert.json`, no root private key) to the platform as
`CAAS_OTA_KEYS_DIR`. The API and the worker call `load_signing_material` alone, which never
opens a root private key.
"""

from __future__ import annotations

import fcntl
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import ValidationError

from caas.protocol.manifest import (
    certified_by,
    issue_certificate,
    load_public_key_b64,
    private_key_from_pem,
    private_key_to_pem,
    public_key_b64,
    sign_manifest,
)
from caas.protocol.mqtt import (
    MalformedPayload,
    ManifestBody,
    SignedManifest,
    SigningCertificate,
    decode,
    encode,
)

ROOT_KEY_FILE = "root.key"
ROOT_PUBLIC_KEY_FILE = "root.pub"
SIGNING_KEY_FILE = "signing.key"
CERTIFICATE_FILE = "signing.cert.json"
DEMO_ROOT_KEY_FILE = "demo-root.key"

DEFAULT_VALIDITY_DAYS = 90
MAX_VALIDITY_DAYS = 3650
# A certificate starts a little before it is issued, so that a car whose clock is slightly
# behind accepts it at once.
CLOCK_TOLERANCE = timedelta(hours=1)
# The demo's certificate spans fixed test clocks and the real one alike.
DEMO_NOT_BEFORE = datetime(2020, 1, 1, tzinfo=UTC)
DEMO_NOT_AFTER = datetime(2100, 1, 1, tzinfo=UTC)

_PRIVATE = 0o600
_PUBLIC = 0o644


class KeyMaterialError(ValueError):
    """A key file is missing, unreadable or does not match the others (one line saying which)."""


@dataclass(frozen=True)
class SigningMaterial:
    """What the platform signs manifests with: the online key and the root's word for it."""

    signing_key: Ed25519PrivateKey
    certificate: SigningCertificate
    root_public_key: Ed25519PublicKey

    def sign(self, body: ManifestBody) -> SignedManifest:
        return sign_manifest(body, signing_key=self.signing_key, certificate=self.certificate)


@dataclass(frozen=True)
class KeyDirectory:
    """What a key directory holds, without any secret (for `caas keys show`)."""

    path: Path
    root_public_key: str | None
    has_root_private_key: bool
    has_demo_root_key: bool
    has_signing_key: bool
    certificate: SigningCertificate | None
    problems: list[str] = field(default_factory=list)


# --- files ----------------------------------------------------------------------------------


def _prepare(directory: Path) -> None:
    if directory.exists() and not directory.is_dir():
        raise KeyMaterialError(f"{directory} is not a directory")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)


def _write(path: Path, data: bytes, *, mode: int) -> None:
    """Replace `path` in one step (a reader sees the old file or the new one, never half)."""
    draft = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(descriptor, "wb") as file:
            os.fchmod(file.fileno(), mode)  # exactly `mode`, whatever the umask
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        draft.replace(path)
    except BaseException:
        draft.unlink(missing_ok=True)
        raise


def _write_new(path: Path, data: bytes, *, mode: int) -> None:
    """Create `path`; KeyMaterialError if it exists (a root key is never overwritten)."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise KeyMaterialError(f"{path} exists already; it is never overwritten") from None
    with os.fdopen(descriptor, "wb") as file:
        os.fchmod(file.fileno(), mode)
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KeyMaterialError(f"{path} is missing") from None
    except OSError as error:
        raise KeyMaterialError(f"{path} cannot be read: {error.strerror}") from None


def read_private_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in the PEM file `path`."""
    data = _read(path)
    try:
        return private_key_from_pem(data)
    except ValueError as error:
        raise KeyMaterialError(f"{path}: {error}") from None


def read_public_key(path: Path) -> Ed25519PublicKey:
    """The Ed25519 public key in the base64 file `path`."""
    text = _read(path).decode("ascii", errors="replace")
    try:
        return load_public_key_b64(text)
    except ValueError as error:
        raise KeyMaterialError(f"{path}: {error}") from None


def read_certificate(path: Path) -> SigningCertificate:
    data = _read(path)
    try:
        return decode(SigningCertificate, data)
    except MalformedPayload as error:
        raise KeyMaterialError(f"{path}: {error}") from None


# --- the ceremony ---------------------------------------------------------------------------


def init_root(directory: Path) -> Ed25519PublicKey:
    """Create the root key in `directory`: `root.key` (0600) and `root.pub`. Never overwrites."""
    _prepare(directory)
    key = Ed25519PrivateKey.generate()
    _write_new(directory / ROOT_KEY_FILE, private_key_to_pem(key), mode=_PRIVATE)
    _write(directory / ROOT_PUBLIC_KEY_FILE, f"{public_key_b64(key)}\n".encode(), mode=_PUBLIC)
    return key.public_key()


def _issue(
    root_key: Ed25519PrivateKey,
    directory: Path,
    *,
    key_id: str,
    not_before: datetime,
    not_after: datetime,
) -> SigningMaterial:
    signing_key = Ed25519PrivateKey.generate()
    try:
        certificate = issue_certificate(
            root_key,
            signing_key.public_key(),
            key_id=key_id,
            not_before=not_before,
            not_after=not_after,
        )
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "certificate"
        raise KeyMaterialError(f"{where}: {first['msg']}") from None
    _prepare(directory)
    _write(directory / ROOT_PUBLIC_KEY_FILE, f"{public_key_b64(root_key)}\n".encode(), mode=_PUBLIC)
    _write(directory / SIGNING_KEY_FILE, private_key_to_pem(signing_key), mode=_PRIVATE)
    _write(directory / CERTIFICATE_FILE, encode(certificate) + b"\n", mode=_PUBLIC)
    return SigningMaterial(signing_key, certificate, root_key.public_key())


def issue_signing(
    root_key_file: Path,
    directory: Path,
    *,
    now: datetime,
    days: int = DEFAULT_VALIDITY_DAYS,
    key_id: str | None = None,
) -> SigningCertificate:
    """A new signing key in `directory` (`signing.key`, `signing.cert.json`, `root.pub`),
    certified by the root in `root_key_file` from now (less `CLOCK_TOLERANCE`) for `days` days.

    Replaces the signing key there: the platform signs with the new one from its next start.
    """
    if not 1 <= days <= MAX_VALIDITY_DAYS:
        raise KeyMaterialError(f"days must be between 1 and {MAX_VALIDITY_DAYS}, not {days}")
    root_key = read_private_key(root_key_file)
    material = _issue(
        root_key,
        directory,
        key_id=key_id or f"signing-{now:%Y%m%d}-{secrets.token_hex(3)}",
        not_before=now - CLOCK_TOLERANCE,
        not_after=now + timedelta(days=days),
    )
    return material.certificate


# --- what the platform loads ----------------------------------------------------------------


def load_signing_material(directory: Path) -> SigningMaterial:
    """The signing key, its certificate and the root's public key from `directory`.

    Checks that the root signed the certificate and that the certificate is for this signing
    key; never opens a root private key. KeyMaterialError says what is wrong.
    """
    root_public_key = read_public_key(directory / ROOT_PUBLIC_KEY_FILE)
    signing_key = read_private_key(directory / SIGNING_KEY_FILE)
    certificate = read_certificate(directory / CERTIFICATE_FILE)
    if not certified_by(certificate, root_public_key):
        raise KeyMaterialError(
            f"{directory / CERTIFICATE_FILE} is not signed by the root key in "
            f"{directory / ROOT_PUBLIC_KEY_FILE}"
        )
    if certificate.public_key != public_key_b64(signing_key):
        raise KeyMaterialError(
            f"{directory / CERTIFICATE_FILE} certifies another key than "
            f"{directory / SIGNING_KEY_FILE}"
        )
    return SigningMaterial(signing_key, certificate, root_public_key)


@contextmanager
def _exclusive(directory: Path) -> Iterator[None]:
    """One process at a time creates the demo keys (the API and the worker may start together)."""
    with (directory / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_demo_keys(directory: Path) -> SigningMaterial:
    """The signing material in `directory`, created first if it is missing (demo and tests).

    The demo's root private key goes to its own file, `demo-root.key`, for `caas keys
    issue-signing --root` to rotate the demo's signing key; the platform never reads it. The
    certificate is valid from `DEMO_NOT_BEFORE` to `DEMO_NOT_AFTER`. Prints nothing.
    """
    _prepare(directory)
    with _exclusive(directory):
        wanted = (ROOT_PUBLIC_KEY_FILE, SIGNING_KEY_FILE, CERTIFICATE_FILE)
        if all((directory / name).exists() for name in wanted):
            return load_signing_material(directory)
        root_file = directory / DEMO_ROOT_KEY_FILE
        if root_file.exists():
            root_key = read_private_key(root_file)
        else:
            root_key = Ed25519PrivateKey.generate()
            _write_new(root_file, private_key_to_pem(root_key), mode=_PRIVATE)
        return _issue(
            root_key,
            directory,
            key_id=f"demo-signing-{secrets.token_hex(3)}",
            not_before=DEMO_NOT_BEFORE,
            not_after=DEMO_NOT_AFTER,
        )


def read_key_directory(directory: Path) -> KeyDirectory:
    """What `directory` holds and whether it is consistent, without reading any secret out."""
    problems: list[str] = []
    root_public: Ed25519PublicKey | None = None
    certificate: SigningCertificate | None = None
    if (directory / ROOT_PUBLIC_KEY_FILE).exists():
        try:
            root_public = read_public_key(directory / ROOT_PUBLIC_KEY_FILE)
        except KeyMaterialError as error:
            problems.append(str(error))
    if (directory / CERTIFICATE_FILE).exists():
        try:
            certificate = read_certificate(directory / CERTIFICATE_FILE)
        except KeyMaterialError as error:
            problems.append(str(error))
    has_signing_key = (directory / SIGNING_KEY_FILE).exists()
    if certificate is not None and has_signing_key:
        try:
            load_signing_material(directory)
        except KeyMaterialError as error:
            problems.append(str(error))
    return KeyDirectory(
        path=directory,
        root_public_key=None if root_public is None else public_key_b64(root_public),
        has_root_private_key=(directory / ROOT_KEY_FILE).exists(),
        has_demo_root_key=(directory / DEMO_ROOT_KEY_FILE).exists(),
        has_signing_key=has_signing_key,
        certificate=certificate,
        problems=problems,
    )
