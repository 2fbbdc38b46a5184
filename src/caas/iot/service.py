"""Car credentials on the broker: issued when the car is built, rotated on demand.

The car's password must reach two places: the car (at the factory, through the caller of
`provision_car`, which returns it) and the broker (through the worker, after commit). It must not
rest in the database. The least bad way found:

- the table keeps a salted scrypt hash (`password_hash`), enough to check a password later;
- the clear password travels to the worker inside the same row, encrypted (`pending_secret`,
  Fernet: AES-128-CBC + HMAC-SHA256) with a key derived from `CAAS_SECRET_KEY` by HKDF, so a
  copy of the database alone reveals nothing; the outbox message carries only the VIN;
- the worker decrypts it, gives it to the broker (`BrokerAdmin.add_car`) and wipes it in the
  same transaction that marks the message done, so it exists encrypted for the seconds between
  the car's birth and the broker's acknowledgement (or for as long as the broker is down).

Giving the password to the broker in the request's own transaction would be simpler but would
make the factory's event wait for the broker and lose the change when the broker is down.

The car gets the birth password the same way: a car born at the factory has it sealed once
more (`bundle_secret`, `seal_for_factory`) for the factory's end of line; the factory's job
(`caas.factory.jobs.send_provisioning`) hands the factory the car's provisioning bundle and
wipes that copy (`bundle_delivered`). Once both are done, only the hash is left.
"""

from __future__ import annotations

import base64
from datetime import datetime

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import select
from sqlalchemy.orm import Session

from caas.core.errors import Conflict, NotFound
from caas.core.history import Actor, record
from caas.core.outbox import enqueue
from caas.core.settings import Settings, get_settings
from caas.iot.models import BrokerCredential
from caas.iot.passwords import hash_password, new_password, verify_password
from caas.protocol import vin as vin_rules

PROVISION_TOPIC = "iot.provision"
REVOKE_TOPIC = "iot.revoke"
ACTOR = Actor.system("iot")


class UnreadableSecret(Exception):
    """A pending password encrypted under another CAAS_SECRET_KEY: rotate the car's password."""


def _fernet(settings: Settings) -> Fernet:
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"caas.iot.broker-credentials"
    ).derive(settings.secret_key.encode())
    return Fernet(base64.urlsafe_b64encode(key))


def seal(settings: Settings, password: str) -> str:
    return _fernet(settings).encrypt(password.encode()).decode()


def unseal(settings: Settings, token: str) -> str:
    try:
        return _fernet(settings).decrypt(token.encode()).decode()
    except InvalidToken as error:
        raise UnreadableSecret("the pending password cannot be decrypted") from error


def find_credential(session: Session, vin: str, *, lock: bool = False) -> BrokerCredential | None:
    query = select(BrokerCredential).where(BrokerCredential.vin == vin)
    if lock:
        query = query.with_for_update()
    return session.scalars(query).first()


def _queue_delivery(session: Session, credential: BrokerCredential, now: datetime) -> None:
    suffix = "" if credential.generation == 1 else f":{credential.generation}"
    enqueue(
        session,
        topic=PROVISION_TOPIC,
        payload={"vin": credential.vin},
        dedupe_key=f"{PROVISION_TOPIC}:{credential.vin}{suffix}",
        now=now,
    )


def provision_car(
    session: Session, *, vin: str, now: datetime, settings: Settings | None = None
) -> str:
    """Issue the car's broker password and queue its account's creation; return the password.

    The caller hands the password to the car (at the factory) and never stores it. A VIN gets
    credentials once (Conflict after that: use `rotate_car_password`).
    """
    vin_rules.validate(vin)
    if find_credential(session, vin) is not None:
        raise Conflict("this car already has broker credentials", code="iot.credentials_exist")
    password = new_password()
    credential = BrokerCredential(
        vin=vin,
        password_hash=hash_password(password),
        pending_secret=seal(settings or get_settings(), password),
        generation=1,
        created_at=now,
    )
    session.add(credential)
    session.flush()
    _queue_delivery(session, credential, now)
    record(
        session,
        at=now,
        actor=ACTOR,
        subject_type="broker_credential",
        subject_id=credential.id,
        event="car.broker_credentials_issued",
        details={"vin": vin},
    )
    return password


def rotate_car_password(
    session: Session, *, vin: str, now: datetime, settings: Settings | None = None
) -> str:
    """A new password for the car (the old one stops working once the broker has the new)."""
    credential = find_credential(session, vin, lock=True)
    if credential is None:
        raise NotFound("this car has no broker credentials", code="iot.credentials_not_found")
    if credential.revoked_at is not None:
        raise Conflict("this car's broker account was revoked", code="iot.credentials_revoked")
    password = new_password()
    credential.password_hash = hash_password(password)
    credential.pending_secret = seal(settings or get_settings(), password)
    credential.generation += 1
    credential.rotated_at = now
    if credential.bundle_secret is not None:  # the factory has not flashed the old one yet
        credential.bundle_secret = credential.pending_secret
    session.flush()
    _queue_delivery(session, credential, now)
    record(
        session,
        at=now,
        actor=ACTOR,
        subject_type="broker_credential",
        subject_id=credential.id,
        event="car.broker_password_rotated",
        details={"vin": vin, "generation": credential.generation},
    )
    return password


def revoke_car_credentials(session: Session, *, vin: str, actor: Actor, now: datetime) -> None:
    """The car leaves the network for good (scrapped): any password still waiting is wiped,
    and its broker account is removed after commit (`iot.revoke`), so its login is refused.
    Revoking again changes nothing."""
    credential = find_credential(session, vin, lock=True)
    if credential is None or credential.revoked_at is not None:
        return
    credential.revoked_at = now
    credential.pending_secret = None
    credential.bundle_secret = None
    enqueue(
        session,
        topic=REVOKE_TOPIC,
        payload={"vin": vin},
        dedupe_key=f"{REVOKE_TOPIC}:{vin}",
        now=now,
    )
    record(
        session,
        at=now,
        actor=actor,
        subject_type="broker_credential",
        subject_id=credential.id,
        event="car.broker_credentials_revoked",
        details={"vin": vin},
    )


def take_pending_password(
    session: Session, *, vin: str, settings: Settings
) -> tuple[BrokerCredential, str] | None:
    """The car's password waiting for the broker, with its row locked; None when none waits."""
    credential = find_credential(session, vin, lock=True)
    if credential is None or credential.pending_secret is None or credential.revoked_at:
        return None
    return credential, unseal(settings, credential.pending_secret)


def seal_for_factory(
    session: Session, *, vin: str, now: datetime, settings: Settings | None = None
) -> BrokerCredential:
    """Keep the car's new password sealed for the factory's end of line too (in the transaction
    that issued it, while the broker's copy still waits); the caller queues the bundle."""
    credential = find_credential(session, vin, lock=True)
    if credential is None or credential.pending_secret is None:
        raise Conflict(
            "this car has no new broker password to hand to the factory",
            code="iot.no_password_for_factory",
        )
    password = unseal(settings or get_settings(), credential.pending_secret)
    credential.bundle_secret = seal(settings or get_settings(), password)
    record(
        session,
        at=now,
        actor=ACTOR,
        subject_type="broker_credential",
        subject_id=credential.id,
        event="car.provisioning_queued",
        details={"vin": vin},
    )
    return credential


def take_bundle_password(
    session: Session, *, vin: str, settings: Settings
) -> tuple[BrokerCredential, str] | None:
    """The car's password waiting for the factory, with its row locked; None when none waits."""
    credential = find_credential(session, vin, lock=True)
    if credential is None or credential.bundle_secret is None:
        return None
    return credential, unseal(settings, credential.bundle_secret)


def bundle_delivered(session: Session, credential: BrokerCredential, *, now: datetime) -> None:
    """The factory has flashed the car's bundle: the platform's copy of the password is wiped."""
    credential.bundle_secret = None
    credential.bundle_delivered_at = now
    record(
        session,
        at=now,
        actor=ACTOR,
        subject_type="broker_credential",
        subject_id=credential.id,
        event="car.provisioning_flashed",
        details={"vin": credential.vin, "generation": credential.generation},
    )


def password_delivered(credential: BrokerCredential, *, now: datetime) -> None:
    """The broker has the password: its encrypted copy is wiped."""
    credential.pending_secret = None
    credential.delivered_at = now


def car_password_matches(session: Session, *, vin: str, password: str) -> bool:
    credential = find_credential(session, vin)
    return credential is not None and verify_password(credential.password_hash, password)
