"""The simulator's knob for failing installs, and the demo's draft release."""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from caas.core.clock import FixedClock
from caas.core.settings import Settings
from caas.releases import service
from caas.releases.demo import DEMO_IMAGE, DEMO_VERSION, ensure_demo_release
from caas_sim.vehicle.agent import BrokerEndpoint, CarIdentity, VehicleAgent
from caas_sim.vehicle.screen import create_app

VIN = "VCAAURA02TM000001"


def test_the_simulator_makes_a_cars_installs_fail_on_request() -> None:
    agent = VehicleAgent(
        CarIdentity(
            vin=VIN,
            password="unused",
            private_key=Ed25519PrivateKey.generate(),
            root_public_key=Ed25519PrivateKey.generate().public_key(),
        ),
        BrokerEndpoint("127.0.0.1", 1),
        model="AURA",
    )
    with TestClient(create_app(agent)) as screens:
        answer = screens.post(
            f"/sim/cars/{VIN}/software", json={"install_failure_rate": 1, "install_seconds": 2}
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["software_update"] is None
        refused = screens.post(f"/sim/cars/{VIN}/software", json={"install_failure_rate": 2})
        assert refused.status_code == 422
        missing = screens.post(
            "/sim/cars/VCAAURA04TM000002/software", json={"install_failure_rate": 0}
        )
        assert missing.status_code == 404
    assert (agent.install_failure_rate, agent.install_seconds) == (1, 2)


def test_the_demo_has_one_draft_release_ready_to_publish(db: Session, tmp_path: Path) -> None:
    settings = Settings(env="test", data_dir=tmp_path)
    now = FixedClock().now()
    first = ensure_demo_release(db, settings, now=now)
    assert first is not None
    assert ensure_demo_release(db, settings, now=now) == first
    release = service.get_release(db, first)
    assert (release.version, release.state, release.signature) == (DEMO_VERSION, "draft", None)
    stored = service.image_file(settings, release).read_bytes()
    assert stored == DEMO_IMAGE
    assert release.image_sha256 == hashlib.sha256(DEMO_IMAGE).hexdigest()
