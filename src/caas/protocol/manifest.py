"""Signed manifests: their canonical encoding, the signing key's certificate, signing, verifying.

**The chain.** The maker's root key (Ed25519) lives offline (`caas keys`); its public half is
pinned in every car at production. The root certifies an online signing key for a while
(`SigningCertificate`); the platform signs each car's `ManifestBody` with that key and publishes
the body, the certificate and the signature together (`SignedManifest`). Rotating the signing
key is issuing a new certificate: the cars are not touched.

**The canonical encoding** (`canonical`) is what is signed: the JSON Canonicalization Scheme
(RFC 8785, the `rfc8785` package) of the data, that is UTF-8 JSON with no whitespace, object
keys sorted, strings with the minimal escaping, integers as integers and every other number in
its shortest form (`50.0` is written `50`; NaN and infinity are refused), after writing every
datetime as UTC ISO 8601 text `YYYY-MM-DDTHH:MM:SS[.ffffff]Z` (fraction only when not zero,
trailing zeros dropped). A Pydantic model is encoded as its `model_dump()`, defaults included.
Equal content gives equal bytes, whatever the field order or the zone a datetime was given in.
Signatures are computed over these bytes, never over the bytes received, so a receiver
re-encodes what it parsed; whitespace or key order on the wire do not matter, content does.

**Verification** (`verify_manifest`) checks, in this order, and stops at the first failure:

1. `malformed`: the payload is not a `SignedManifest` (JSON, fields, base64, key sizes).
2. `bad_certificate`: the certificate is not signed by the pinned root (forged, or another
   maker's root).
3. `certificate_expired`: the car's clock is outside the certificate's `not_before` ..
   `not_after` (expired, or not valid yet).
4. `bad_signature`: the body's signature is not the certified key's (a changed byte, or signed
   by another key).
5. `wrong_vin`: a genuine manifest, for another car.
6. `stale_version`: a genuine manifest for this car, not newer than the version it runs (a
   replay, or an old message arriving late).

Authenticity comes first, so nothing a forger wrote decides the answer; the car's own
state (VIN, version) is checked only against content the maker signed.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal, get_args

import rfc8785
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)
from pydantic import BaseModel

from caas.protocol.mqtt import (
    ED25519_PUBLIC_KEY_BYTES,
    ED25519_SIGNATURE_BYTES,
    MalformedPayload,
    ManifestBody,
    SignedManifest,
    SigningCertificate,
    SoftwareOrder,
    decode,
)

RejectionReason = Literal[
    "malformed",
    "bad_certificate",
    "certificate_expired",
    "bad_signature",
    "wrong_vin",
    "stale_version",
]
# In the order `verify_manifest` checks them.
REJECTION_REASONS: tuple[RejectionReason, ...] = get_args(RejectionReason)

_UNSIGNED = base64.b64encode(bytes(ED25519_SIGNATURE_BYTES)).decode()


class ManifestRejected(ValueError):
    """The car must not apply this manifest; `reason` is a stable code (`REJECTION_REASONS`)."""

    def __init__(self, reason: RejectionReason, detail: str, *, version: int | None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: RejectionReason = reason
        self.detail = detail
        # The version the manifest claims (not verified when the rejection is about
        # authenticity); None when it could not be read. The car puts it in its report.
        self.version = version


# --- canonical encoding ---------------------------------------------------------------------


def canonical_datetime(moment: datetime) -> str:
    """`moment` as canonical text: UTC, `YYYY-MM-DDTHH:MM:SS[.ffffff]Z`, no trailing zeros."""
    if moment.utcoffset() is None:
        raise ValueError("a datetime without a zone has no canonical encoding")
    utc = moment.astimezone(UTC)
    text = utc.replace(tzinfo=None, microsecond=0).isoformat()
    if utc.microsecond:
        text += f".{utc.microsecond:06d}".rstrip("0")
    return f"{text}Z"


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return canonical_datetime(value)
    if isinstance(value, Mapping):
        if not all(isinstance(key, str) for key in value):
            raise TypeError("object keys must be text")
        return {key: _json_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"{type(value).__name__} has no canonical encoding")


def canonical(data: BaseModel | Mapping[str, Any]) -> bytes:
    """The one byte string that encodes `data` (see the module's docstring); what is signed.

    ValueError (rfc8785.CanonicalizationError) for numbers JSON cannot carry exactly (NaN,
    infinity, integers beyond 2**53 - 1); TypeError for values that are not JSON data.
    """
    plain = data.model_dump() if isinstance(data, BaseModel) else data
    return rfc8785.dumps(_json_value(plain))


# --- keys -----------------------------------------------------------------------------------


def public_key_b64(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """The raw 32 bytes of an Ed25519 public key (of a private key: its public half), base64."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return base64.b64encode(public.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def load_public_key_b64(text: str) -> Ed25519PublicKey:
    """The Ed25519 public key from its base64 text (surrounding whitespace ignored)."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("an Ed25519 public key in base64 was expected") from None
    if len(raw) != ED25519_PUBLIC_KEY_BYTES:
        raise ValueError(
            f"an Ed25519 public key has {ED25519_PUBLIC_KEY_BYTES} bytes, not {len(raw)}"
        )
    return Ed25519PublicKey.from_public_bytes(raw)


def private_key_to_pem(key: Ed25519PrivateKey) -> bytes:
    """PKCS #8 PEM, unencrypted: protect the file (mode 0600, offline for the root)."""
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def private_key_from_pem(data: bytes) -> Ed25519PrivateKey:
    """The Ed25519 private key in PEM `data`; ValueError for anything else."""
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError("not an unencrypted private key in PEM") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"an Ed25519 key was expected, not {type(key).__name__}")
    return key


def _signature(key: Ed25519PrivateKey, data: bytes) -> str:
    return base64.b64encode(key.sign(data)).decode()


def _verifies(key: Ed25519PublicKey, signature: str, data: bytes) -> bool:
    try:
        key.verify(base64.b64decode(signature), data)
    except InvalidSignature:
        return False
    return True


# --- the certificate ------------------------------------------------------------------------


def certificate_claims(certificate: SigningCertificate) -> bytes:
    """What the root signs: the canonical encoding of the certificate without `signature`."""
    return canonical(certificate.model_dump(exclude={"signature"}))


def issue_certificate(
    root_key: Ed25519PrivateKey,
    signing_public_key: Ed25519PublicKey,
    *,
    key_id: str,
    not_before: datetime,
    not_after: datetime,
) -> SigningCertificate:
    """The root's certificate that `signing_public_key` may sign manifests in that window."""
    draft = SigningCertificate(
        key_id=key_id,
        public_key=public_key_b64(signing_public_key),
        not_before=not_before,
        not_after=not_after,
        signature=_UNSIGNED,
    )
    return draft.model_copy(update={"signature": _signature(root_key, certificate_claims(draft))})


def certified_by(certificate: SigningCertificate, root_public_key: Ed25519PublicKey) -> bool:
    """Whether the certificate carries a genuine signature of that root."""
    return _verifies(root_public_key, certificate.signature, certificate_claims(certificate))


# --- manifests ------------------------------------------------------------------------------


def sign_manifest(
    body: ManifestBody, *, signing_key: Ed25519PrivateKey, certificate: SigningCertificate
) -> SignedManifest:
    """The body, signed with the online key, with the certificate that vouches for that key.

    ValueError if the certificate is for another key (the car would reject the manifest).
    """
    if public_key_b64(signing_key) != certificate.public_key:
        raise ValueError(f"certificate {certificate.key_id} is for another signing key")
    return SignedManifest(
        body=body, certificate=certificate, signature=_signature(signing_key, canonical(body))
    )


def _claimed_version(payload: bytes | str) -> int | None:
    try:
        version = json.loads(payload)["body"]["version"]
    except (ValueError, TypeError, KeyError):
        return None
    return version if isinstance(version, int) and not isinstance(version, bool) else None


def verify_manifest(
    manifest: SignedManifest | bytes | str,
    *,
    root_public_key: Ed25519PublicKey,
    vin: str,
    current_version: int,
    now: datetime,
) -> ManifestBody:
    """The body, when the car `vin` running `current_version` may apply it at `now` (its clock).

    Otherwise ManifestRejected with the first failed check, in the module docstring's order.
    """
    if isinstance(manifest, SignedManifest):
        signed = manifest
    else:
        try:
            signed = decode(SignedManifest, manifest)
        except MalformedPayload as error:
            raise ManifestRejected(
                "malformed", str(error), version=_claimed_version(manifest)
            ) from None
    body, certificate = signed.body, signed.certificate
    claimed = body.version

    if not certified_by(certificate, root_public_key):
        raise ManifestRejected(
            "bad_certificate",
            f"certificate {certificate.key_id} is not signed by the pinned root key",
            version=claimed,
        )
    if not certificate.not_before <= now <= certificate.not_after:
        raise ManifestRejected(
            "certificate_expired",
            f"certificate {certificate.key_id} is valid from "
            f"{canonical_datetime(certificate.not_before)} to "
            f"{canonical_datetime(certificate.not_after)}, not at {canonical_datetime(now)}",
            version=claimed,
        )
    try:
        signed_bytes = canonical(body)
    except (ValueError, TypeError) as error:
        raise ManifestRejected("malformed", str(error), version=claimed) from None
    if not _verifies(load_public_key_b64(certificate.public_key), signed.signature, signed_bytes):
        raise ManifestRejected(
            "bad_signature",
            f"the body is not signed by the key of certificate {certificate.key_id}",
            version=claimed,
        )
    if body.vin != vin:
        raise ManifestRejected("wrong_vin", f"for {body.vin}, not {vin}", version=claimed)
    if body.version <= current_version:
        raise ManifestRejected(
            "stale_version",
            f"version {body.version} is not newer than {current_version}",
            version=claimed,
        )
    return body


# --- size on the wire ----------------------------------------------------------------------


def encode_for_wire(manifest: SignedManifest | Mapping[str, Any]) -> bytes:
    """The bytes published on the car's desired topic: the `SignedManifest` as compact UTF-8
    JSON (no whitespace, non-ASCII characters as themselves). Not the canonical encoding: the
    car re-encodes what it parsed to check the signature."""
    plain = manifest.model_dump(mode="json") if isinstance(manifest, SignedManifest) else manifest
    return json.dumps(plain, separators=(",", ":"), ensure_ascii=False).encode()


def publish_packet_size(topic: str, payload_size: int) -> int:
    """The bytes of the MQTT PUBLISH packet (QoS 1) that carries `payload_size` bytes on
    `topic`: what a broker's packet limit (Mosquitto's `max_packet_size`) is compared with.

    Fixed header (type, then the remaining length in 1 to 4 bytes), topic (2-byte length and
    its UTF-8 bytes), packet identifier (2 bytes), then the payload; plus one byte for MQTT 5's
    properties (empty), so the size holds whichever version the car speaks."""
    remaining = 2 + len(topic.encode()) + 2 + 1 + payload_size
    length_bytes = 1
    while remaining >= 128**length_bytes:
        length_bytes += 1
    return 1 + length_bytes + remaining


# --- software releases ----------------------------------------------------------------------


def release_claims(*, version: str, sha256: str, size: int, models: list[str]) -> bytes:
    """What the signing key signs of a software release: the canonical encoding of its version,
    image hash and size and the models it is built for (sorted)."""
    return canonical({"version": version, "sha256": sha256, "size": size, "models": sorted(models)})


def sign_release(
    signing_key: Ed25519PrivateKey, *, version: str, sha256: str, size: int, models: list[str]
) -> str:
    """The signing key's signature (base64) over the release's claims."""
    claims = release_claims(version=version, sha256=sha256, size=size, models=models)
    return _signature(signing_key, claims)


def release_signed(order: SoftwareOrder, certificate: SigningCertificate) -> bool:
    """Whether the order's signature is the certified key's over its claims (the certificate is
    the one of the manifest that carried the order, already checked against the root)."""
    claims = release_claims(
        version=order.version, sha256=order.sha256, size=order.size, models=order.models
    )
    return _verifies(load_public_key_b64(certificate.public_key), order.signature, claims)
