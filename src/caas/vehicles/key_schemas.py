"""Shapes of the digital key API: pairing a phone and the phones paired with a car."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from caas.vehicles.keys import Algorithm, normalised_public_key
from caas.vehicles.models import PhoneKey

EXAMPLE_SPKI = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEliQ9+IcQEgFfe6u7q1kwdx5EpC70Q+K+hqfJ14CzIBeFEV1ng2g+"
    "tr2yFKLm/L2sc5ulLGJNOR4x98iU+NIhSg=="
)


class PhoneKeyCreate(BaseModel):
    """The public half of a key pair the phone made; the private half never leaves it."""

    model_config = ConfigDict(extra="forbid")

    algorithm: Algorithm = Field(
        default="ECDSA-P256-SHA256",
        description="`ECDSA-P256-SHA256` (WebCrypto: `generateKey({name: 'ECDSA', namedCurve: "
        "'P-256'})`, signatures r || s) or `Ed25519`",
    )
    public_key: str = Field(
        min_length=40,
        max_length=400,
        description="Base64: the SubjectPublicKeyInfo DER (WebCrypto `exportKey('spki')`) for "
        "ECDSA P-256, the raw 32 bytes for Ed25519",
        examples=[EXAMPLE_SPKI],
    )
    label: str = Field(
        min_length=1,
        max_length=80,
        description="Whose phone, as the owner and the car's screen show it",
        examples=["Lucía's phone", "second driver"],
    )

    @field_validator("public_key")
    @classmethod
    def _a_key_of_the_algorithm(cls, value: str, info: ValidationInfo) -> str:
        algorithm = info.data.get("algorithm")
        if algorithm is None:  # the algorithm itself is invalid: that error says enough
            return value
        return normalised_public_key(algorithm, value)

    @field_validator("label")
    @classmethod
    def _tidy_label(cls, value: str) -> str:
        value = " ".join(value.split())
        if not value:
            raise ValueError("name whose phone it is")
        return value


class PhoneKeyRead(BaseModel):
    """A phone paired with the car, active or revoked."""

    id: int = Field(description="Database id of the key (used to revoke it)", examples=[7])
    car_key_id: str = Field(
        description="How the signed manifest and the car's screen name this key",
        examples=["pk-7"],
    )
    vin: str = Field(description="The car", examples=["VCAAURA02TM000001"])
    label: str = Field(description="Whose phone", examples=["Lucía's phone"])
    algorithm: Algorithm = Field(description="`ECDSA-P256-SHA256` or `Ed25519`")
    public_key: str = Field(description="Base64 public key, as the car receives it")
    created_at: datetime = Field(description="When it was paired, with UTC offset")
    revoked_at: datetime | None = Field(
        description="When it was revoked, with UTC offset; null while it opens the car"
    )
    active: bool = Field(description="Not revoked: the car's manifests carry it")

    @classmethod
    def of(cls, key: PhoneKey, vin: str) -> PhoneKeyRead:
        return cls.model_validate(
            {
                "id": key.id,
                "car_key_id": key.car_key_id,
                "vin": vin,
                "label": key.label,
                "algorithm": key.algorithm,
                "public_key": key.public_key,
                "created_at": key.created_at,
                "revoked_at": key.revoked_at,
                "active": key.revoked_at is None,
            }
        )
