"""Signed manifests: the canonical encoding, the certificate chain, and every reason a car
rejects a manifest, each with a real signed manifest."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from caas.protocol.manifest import (
    REJECTION_REASONS,
    ManifestRejected,
    canonical,
    canonical_datetime,
    certified_by,
    issue_certificate,
    load_public_key_b64,
    private_key_from_pem,
    private_key_to_pem,
    public_key_b64,
    sign_manifest,
    verify_manifest,
)
from caas.protocol.mqtt import (
    FeatureState,
    ManifestBody,
    PhoneKey,
    SignedManifest,
    SigningCertificate,
    decode,
    encode,
)
from caas.protocol.vin import make_vin

NOW = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
VIN = make_vin("VCA", "AURA0", "T", "M", 1)
OTHER_VIN = make_vin("VCA", "AURA0", "T", "M", 2)
ROOT = Ed25519PrivateKey.generate()
SIGNING_KEY = Ed25519PrivateKey.generate()
PHONE = Ed25519PrivateKey.generate()


def certificate_for(
    key: Ed25519PrivateKey,
    *,
    root: Ed25519PrivateKey = ROOT,
    not_before: datetime = NOW - timedelta(days=1),
    not_after: datetime = NOW + timedelta(days=90),
) -> SigningCertificate:
    return issue_certificate(
        root, key.public_key(), key_id="signing-test", not_before=not_before, not_after=not_after
    )


CERTIFICATE = certificate_for(SIGNING_KEY)


def body(*, vin: str = VIN, version: int = 5) -> ManifestBody:
    return ManifestBody(
        vin=vin,
        version=version,
        issued_at=NOW,
        features=[
            FeatureState(
                code="power_boost",
                enabled=True,
                valid_from=NOW,
                valid_until=NOW + timedelta(days=30),
                parameters={"percent": 50},
                affects_driving=True,
            ),
            FeatureState(code="entertainment", enabled=False, affects_driving=False),
        ],
        phone_keys=[
            PhoneKey(
                key_id="pk-1",
                algorithm="Ed25519",
                public_key=public_key_b64(PHONE),
                label="Lucía's phone",
            )
        ],
        messages=["Power boost is on until 14 February."],
    )


def signed(manifest_body: ManifestBody | None = None) -> bytes:
    manifest = sign_manifest(
        manifest_body or body(), signing_key=SIGNING_KEY, certificate=CERTIFICATE
    )
    return encode(manifest)


def verify(payload: bytes | SignedManifest, *, current_version: int = 4, now: datetime = NOW,
           vin: str = VIN) -> ManifestBody:  # fmt: skip
    return verify_manifest(
        payload,
        root_public_key=ROOT.public_key(),
        vin=vin,
        current_version=current_version,
        now=now,
    )


def rejection(payload: bytes | SignedManifest, **kwargs: object) -> ManifestRejected:
    with pytest.raises(ManifestRejected) as caught:
        verify(payload, **kwargs)  # type: ignore[arg-type]
    return caught.value


# --- a genuine manifest ---------------------------------------------------------------------


def test_a_genuine_newer_manifest_for_the_car_is_accepted() -> None:
    accepted = verify(signed())
    assert accepted == body()
    assert accepted.features[0].parameters == {"percent": 50}


def test_a_manifest_is_accepted_as_a_model_too() -> None:
    manifest = sign_manifest(body(), signing_key=SIGNING_KEY, certificate=CERTIFICATE)
    assert verify(manifest).version == 5


def test_the_certificate_survives_its_json() -> None:
    again = decode(SigningCertificate, encode(CERTIFICATE))
    assert certified_by(again, ROOT.public_key())
    assert again == CERTIFICATE


def test_the_platform_cannot_sign_with_a_key_the_certificate_is_not_for() -> None:
    with pytest.raises(ValueError, match="another signing key"):
        sign_manifest(body(), signing_key=Ed25519PrivateKey.generate(), certificate=CERTIFICATE)


# --- every rejection reason -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("original", "changed"),
    [
        ('"version":5', '"version":6'),
        ('"percent":50', '"percent":51'),
        ('"valid_until":"2026-02-14', '"valid_until":"2026-03-14'),
        ('"code":"entertainment"', '"code":"entertainmenu"'),
        ("Lucía's phone", "Lucía's phono"),
    ],
)
def test_a_changed_byte_in_the_body_is_a_bad_signature(original: str, changed: str) -> None:
    payload = signed().decode()
    assert original in payload
    forged = payload.replace(original, changed, 1).encode()
    assert rejection(forged).reason == "bad_signature"


def test_no_single_changed_byte_anywhere_changes_what_the_car_applies() -> None:
    payload = signed()
    for position in range(len(payload)):
        forged = bytearray(payload)
        forged[position] ^= 0x01
        try:
            accepted = verify(bytes(forged))
        except ManifestRejected as error:
            assert error.reason in ("malformed", "bad_certificate", "bad_signature"), position
        else:  # only a byte that writes the same content differently ("T" as "U" is not one)
            assert accepted == body(), position


def test_a_manifest_for_another_car_is_wrong_vin() -> None:
    refused = rejection(signed(body(vin=OTHER_VIN)))
    assert refused.reason == "wrong_vin"
    assert OTHER_VIN in str(refused)


@pytest.mark.parametrize("current_version", [5, 6, 100])
def test_an_equal_or_older_version_is_a_stale_replay(current_version: int) -> None:
    refused = rejection(signed(body(version=5)), current_version=current_version)
    assert refused.reason == "stale_version"
    assert refused.version == 5


def test_a_body_signed_by_an_uncertified_key_is_a_bad_signature() -> None:
    impostor = Ed25519PrivateKey.generate()
    genuine = sign_manifest(body(), signing_key=SIGNING_KEY, certificate=CERTIFICATE)
    resigned = SignedManifest(
        body=genuine.body,
        certificate=CERTIFICATE,
        signature=sign_manifest(
            body(), signing_key=impostor, certificate=certificate_for(impostor)
        ).signature,
    )
    assert rejection(encode(resigned)).reason == "bad_signature"


def test_a_certificate_forged_by_another_root_is_a_bad_certificate() -> None:
    attacker_root, attacker_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    forged_certificate = certificate_for(attacker_key, root=attacker_root)
    forged = sign_manifest(body(), signing_key=attacker_key, certificate=forged_certificate)
    assert rejection(encode(forged)).reason == "bad_certificate"


def test_a_certificate_whose_window_was_stretched_is_a_bad_certificate() -> None:
    stretched = CERTIFICATE.model_copy(update={"not_after": NOW + timedelta(days=3650)})
    manifest = sign_manifest(body(), signing_key=SIGNING_KEY, certificate=stretched)
    assert rejection(encode(manifest)).reason == "bad_certificate"


def test_a_certificate_that_certifies_an_attackers_key_is_a_bad_certificate() -> None:
    attacker_key = Ed25519PrivateKey.generate()
    swapped = CERTIFICATE.model_copy(update={"public_key": public_key_b64(attacker_key)})
    manifest = sign_manifest(body(), signing_key=attacker_key, certificate=swapped)
    assert rejection(encode(manifest)).reason == "bad_certificate"


@pytest.mark.parametrize(
    "moment",
    [NOW + timedelta(days=90, seconds=1), NOW - timedelta(days=1, seconds=1)],
    ids=["after-not_after", "before-not_before"],
)
def test_a_certificate_outside_its_window_is_expired(moment: datetime) -> None:
    refused = rejection(signed(), now=moment)
    assert refused.reason == "certificate_expired"


def test_a_certificate_is_valid_on_both_edges_of_its_window() -> None:
    assert verify(signed(), now=CERTIFICATE.not_before).version == 5
    assert verify(signed(), now=CERTIFICATE.not_after).version == 5


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"{not json",
        b"[]",
        b'{"body": {}}',
        b"\xff\xfe garbage",
        b'{"body": {"version": 9}, "certificate": null, "signature": "x"}',
    ],
)
def test_malformed_json_is_malformed(payload: bytes) -> None:
    assert rejection(payload).reason == "malformed"


def test_an_unknown_field_is_malformed_and_keeps_the_claimed_version() -> None:
    document = json.loads(signed())
    document["body"]["unlock_everything"] = True
    refused = rejection(json.dumps(document).encode())
    assert refused.reason == "malformed"
    assert "unlock_everything" in refused.detail
    assert refused.version == 5


def test_forgery_is_reported_before_the_cars_own_checks() -> None:
    attacker_root, attacker_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    forged = sign_manifest(
        body(vin=OTHER_VIN, version=1),
        signing_key=attacker_key,
        certificate=certificate_for(attacker_key, root=attacker_root),
    )
    assert rejection(encode(forged)).reason == "bad_certificate"


def test_reasons_are_the_stable_codes_in_checking_order() -> None:
    assert REJECTION_REASONS == (
        "malformed",
        "bad_certificate",
        "certificate_expired",
        "bad_signature",
        "wrong_vin",
        "stale_version",
    )


# --- the canonical encoding -----------------------------------------------------------------


def test_canonical_encoding_is_sorted_compact_utf8() -> None:
    assert canonical({"b": 1, "a": [True, None, "é"], "c": 2.5}) == (
        '{"a":[true,null,"é"],"b":1,"c":2.5}'.encode()
    )


def test_canonical_encoding_does_not_depend_on_field_order() -> None:
    one = {"version": 5, "vin": VIN, "nested": {"x": 1, "y": [1, 2]}}
    other = {"nested": {"y": [1, 2], "x": 1}, "vin": VIN, "version": 5}
    assert canonical(one) == canonical(other)
    assert canonical(body()) == canonical(ManifestBody.model_validate(json.loads(encode(body()))))
    reordered = dict(reversed(list(json.loads(encode(body())).items())))
    assert canonical(ManifestBody.model_validate(reordered)) == canonical(body())


def test_equal_datetimes_in_different_offsets_encode_the_same() -> None:
    madrid = NOW.astimezone(timezone(timedelta(hours=1)))
    tokyo = NOW.astimezone(timezone(timedelta(hours=9)))
    assert canonical({"at": madrid}) == canonical({"at": tokyo}) == b'{"at":"2026-01-15T09:00:00Z"}'
    assert canonical(body().model_copy(update={"issued_at": tokyo})) == canonical(body())
    from_text = ManifestBody.model_validate(
        {**json.loads(encode(body())), "issued_at": "2026-01-15T10:00:00+01:00"}
    )
    assert canonical(from_text) == canonical(body())


def test_a_manifest_written_with_offsets_still_verifies() -> None:
    document = json.loads(signed())
    document["body"]["issued_at"] = "2026-01-15T04:00:00-05:00"
    document["certificate"]["not_after"] = (
        (NOW + timedelta(days=90)).astimezone(timezone(timedelta(hours=2))).isoformat()
    )
    assert verify(json.dumps(document, indent=2).encode()) == body()


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2026, 1, 15, 9, 0, 0, 500_000, tzinfo=UTC), "2026-01-15T09:00:00.5Z"),
        (datetime(2026, 1, 15, 9, 0, 0, 123_456, tzinfo=UTC), "2026-01-15T09:00:00.123456Z"),
        (datetime(2026, 1, 15, 9, 0, 0, 10, tzinfo=UTC), "2026-01-15T09:00:00.00001Z"),
        (datetime(999, 1, 1, tzinfo=UTC), "0999-01-01T00:00:00Z"),
    ],
)
def test_datetimes_are_utc_with_the_shortest_fraction(moment: datetime, text: str) -> None:
    assert canonical_datetime(moment) == text


def test_integral_numbers_are_written_as_integers() -> None:
    assert canonical({"n": 50.0}) == canonical({"n": 50}) == b'{"n":50}'
    assert canonical({"n": 0.1}) == b'{"n":0.1}'


@pytest.mark.parametrize(
    "value",
    [{"n": float("nan")}, {"n": float("inf")}, {"n": 2**60}],
    ids=["nan", "infinity", "unsafe-integer"],
)
def test_numbers_json_cannot_carry_exactly_are_refused(value: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        canonical(value)


def test_naive_datetimes_and_foreign_objects_have_no_encoding() -> None:
    with pytest.raises(ValueError, match="zone"):
        canonical({"at": datetime(2026, 1, 15)})
    with pytest.raises(TypeError):
        canonical({"key": object()})


# --- keys -----------------------------------------------------------------------------------


def test_keys_round_trip_through_their_text() -> None:
    text = public_key_b64(ROOT)
    assert public_key_b64(load_public_key_b64(f"  {text}\n")) == text
    pem = private_key_to_pem(ROOT)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public_key_b64(private_key_from_pem(pem)) == text


@pytest.mark.parametrize("text", ["", "not base64!", "AAAA"])
def test_a_public_key_that_is_not_one_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        load_public_key_b64(text)


def test_only_ed25519_private_keys_are_loaded() -> None:
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
    )
    with pytest.raises(ValueError, match="Ed25519"):
        private_key_from_pem(other)
    with pytest.raises(ValueError, match="PEM"):
        private_key_from_pem(b"hello")
