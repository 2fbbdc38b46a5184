"""TLS to the broker (`CAAS_MQTT_URL=mqtts://...`, `CAAS_MQTT_CA_FILE`): the worker's bridge,
the broker administrator and the cars connect to a private Mosquitto's TLS listener, whose
certificate is signed by a CA made here; a certificate no trusted CA signed is refused."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from caas.core.clock import SystemClock
from caas.core.settings import Settings
from caas.factory.jobs import car_broker_url
from caas.iot.bridge import Bridge
from caas.iot.broker import BrokerAddress, BrokerAdminError, DynsecAdmin
from caas.iot.local import SERVICE_USERNAME, LocalBroker
from caas.iot.mosquitto import PrivateMosquitto, TlsListener
from caas.iot.mosquitto import available as mosquitto_available
from caas.iot.passwords import new_password
from caas.iot.rules import platform_permissions
from caas.ota.keys import SigningMaterial
from caas.worker import Worker, build_worker
from caas_sim.vehicle.agent import BrokerEndpoint, CarIdentity, VehicleAgent
from tests.conftest import SmtpInbox
from tests.iot.conftest import fresh_vin
from tests.mqtt import V311
from tests.ota.test_configuration_delivery import credentials_delivered
from tests.vehicles.support import (
    CommittedDatabase,
    born_car,
    committed,
    eventually,
    in_state,
    signing,
    wait_until,
)

__all__ = ["committed", "signing"]

pytestmark = pytest.mark.skipif(
    not mosquitto_available(), reason="mosquitto (with its dynamic security plugin) is needed"
)


# --- a CA and the broker's certificate, made here -------------------------------------------


@dataclass(frozen=True)
class Certificates:
    ca_file: Path  # the CA that signed the broker's certificate
    other_ca_file: Path  # a CA that signed nothing of the broker's
    certfile: Path
    keyfile: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_ca(path: Path, common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return key, certificate


def _write_server_certificate(
    directory: Path, ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate
) -> tuple[Path, Path]:
    """The broker's certificate for 127.0.0.1 and localhost, signed by `ca`."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name("caas test broker"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    certfile, keyfile = directory / "broker.pem", directory / "broker.key"
    certfile.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    keyfile.chmod(0o600)
    return certfile, keyfile


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    directory = tmp_path_factory.mktemp("tls")
    ca_key, ca = _write_ca(directory / "ca.pem", "caas test CA")
    _write_ca(directory / "other-ca.pem", "someone else's CA")
    certfile, keyfile = _write_server_certificate(directory, ca_key, ca)
    return Certificates(directory / "ca.pem", directory / "other-ca.pem", certfile, keyfile)


@dataclass
class TlsBroker:
    broker: LocalBroker
    tls_port: int
    certificates: Certificates

    def url(self, host: str = "127.0.0.1") -> str:
        """`CAAS_MQTT_URL` for the platform's account on the TLS listener."""
        user = quote(self.broker.service_username, safe="")
        password = quote(self.broker.service_password, safe="")
        return f"mqtts://{user}:{password}@{host}:{self.tls_port}"

    def settings(self, ca_file: Path | None, **more: object) -> Settings:
        return Settings(
            env="test",
            mqtt_url=self.url(),
            mqtt_ca_file=ca_file,
            mqtt_admin_username=self.broker.admin_username,
            mqtt_admin_password=self.broker.admin_password,
            **more,  # type: ignore[arg-type]
        )


@pytest.fixture(scope="module")
def tls_broker(
    tmp_path_factory: pytest.TempPathFactory, certificates: Certificates
) -> Iterator[TlsBroker]:
    """A private Mosquitto of this module with a TLS listener beside its plain one; the
    platform's account is created over TLS."""
    mosquitto = PrivateMosquitto(
        tmp_path_factory.mktemp("mqtt-tls"),
        tls=TlsListener(certificates.certfile, certificates.keyfile),
    ).start()
    broker = LocalBroker(
        "mosquitto",
        mosquitto.host,
        mosquitto.port,
        mosquitto.admin_username,
        mosquitto.admin_password,
        _mosquitto=mosquitto,
    )
    with broker:
        admin = DynsecAdmin(
            mosquitto.host,
            mosquitto.tls_port,
            mosquitto.admin_username,
            mosquitto.admin_password,
            tls=True,
            ca_file=certificates.ca_file,
        )
        permissions = platform_permissions()
        admin.add_service_account(
            SERVICE_USERNAME,
            broker.service_password,
            subscribe=list(permissions.subscribe),
            publish=list(permissions.publish),
        )
        admin.close()
        yield TlsBroker(broker, mosquitto.tls_port, certificates)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- the platform and a car over TLS --------------------------------------------------------


@pytest.fixture
def platform_settings(
    tls_broker: TlsBroker,
    committed: CommittedDatabase,
    smtp_server: SmtpInbox,
    signing: SigningMaterial,
    tmp_path: Path,
) -> Settings:
    """The platform's settings with `CAAS_MQTT_URL=mqtts://...` and the test CA."""
    return tls_broker.settings(
        tls_broker.certificates.ca_file,
        database_url=committed.url,
        smtp_url=f"smtp://127.0.0.1:{smtp_server.port}",
        public_url="http://testserver",
        ota_keys_dir=tmp_path / "keys",
    )


@pytest.fixture
def tls_worker(platform_settings: Settings, committed: CommittedDatabase) -> Iterator[Worker]:
    worker = build_worker(platform_settings, committed.sessions, SystemClock())
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
async def online() -> AsyncIterator[list[VehicleAgent]]:
    agents: list[VehicleAgent] = []
    yield agents
    await asyncio.gather(*(agent.stop() for agent in agents))


@pytest.mark.anyio
async def test_a_car_over_tls_gets_its_configuration_from_a_worker_over_tls(
    tls_broker: TlsBroker,
    platform_settings: Settings,
    tls_worker: Worker,
    committed: CommittedDatabase,
    signing: SigningMaterial,
    online: list[VehicleAgent],
) -> None:
    bridge = tls_worker.bridge
    assert bridge is not None and bridge.address.tls
    assert bridge.connected.wait(10), "the bridge did not connect over TLS"
    car = committed.run(
        lambda session: born_car(session, settings=platform_settings, now=datetime.now(UTC))
    )
    # The worker gives the broker the car's account through the administrator, over TLS.
    wait_until(lambda: committed.run(credentials_delivered(car)), what="the car's account")

    identity = CarIdentity(
        vin=car.vin,
        password=car.password,
        private_key=Ed25519PrivateKey.generate(),
        root_public_key=signing.root_public_key,
    )
    endpoint = BrokerEndpoint.from_url(
        f"mqtts://localhost:{tls_broker.tls_port}", ca_file=tls_broker.certificates.ca_file
    )
    assert endpoint.tls
    agent = VehicleAgent(identity, endpoint, software_version="7.2.0")
    online.append(agent)
    agent.start()
    await agent.wait_online(10)
    await eventually(in_state(committed, car, 1, "applied"), what="version 1 applied over TLS")
    assert agent.version == 1


# --- refusals -------------------------------------------------------------------------------


def test_the_administrator_refuses_a_broker_certificate_of_another_ca(
    tls_broker: TlsBroker,
) -> None:
    admin = DynsecAdmin.from_settings(tls_broker.settings(tls_broker.certificates.other_ca_file))
    with pytest.raises(
        BrokerAdminError, match=r"does not vouch for .*CAAS_MQTT_CA_FILE"
    ) as refused:
        admin.add_car(fresh_vin(), new_password())
    assert str(tls_broker.certificates.other_ca_file) in str(refused.value)


def test_without_a_ca_file_the_system_cas_are_trusted_and_a_private_ca_is_not(
    tls_broker: TlsBroker,
) -> None:
    admin = DynsecAdmin.from_settings(tls_broker.settings(None))
    with pytest.raises(BrokerAdminError, match="the system's CAs does not vouch"):
        admin.add_car(fresh_vin(), new_password())


def test_the_bridge_refuses_a_broker_certificate_of_another_ca(
    tls_broker: TlsBroker, committed: CommittedDatabase
) -> None:
    settings = tls_broker.settings(tls_broker.certificates.other_ca_file)
    bridge = Bridge.from_settings(settings, committed.sessions, SystemClock(), reconnect_seconds=60)
    with structlog.testing.capture_logs() as logs:
        bridge.start(wait=0)
        try:
            refused = wait_until(
                lambda: [e for e in logs if e["event"] == "mqtt.bridge_disconnected"],
                what="the bridge's refusal",
            )
        finally:
            bridge.stop()
    assert not bridge.connected.is_set()
    assert "does not vouch for" in refused[0]["error"]
    assert "CERTIFICATE_VERIFY_FAILED" in refused[0]["error"]


def test_a_car_with_another_ca_stays_offline(tls_broker: TlsBroker) -> None:
    vin = fresh_vin()
    password = tls_broker.broker.add_car(vin)

    async def connect() -> None:
        agent = VehicleAgent(
            CarIdentity(
                vin=vin,
                password=password,
                private_key=Ed25519PrivateKey.generate(),
                root_public_key=Ed25519PrivateKey.generate().public_key(),
            ),
            BrokerEndpoint(
                "127.0.0.1",
                tls_broker.tls_port,
                V311,
                tls=True,
                ca_file=tls_broker.certificates.other_ca_file,
            ),
            software_version="7.2.0",
        )
        agent.start()
        try:
            with pytest.raises(TimeoutError):
                await agent.wait_online(2)
        finally:
            await agent.stop()

    asyncio.run(connect())


# --- addresses ------------------------------------------------------------------------------


def test_mqtts_urls_speak_tls_on_8883_by_default_and_mqtt_urls_stay_plain(
    certificates: Certificates,
) -> None:
    secure = BrokerAddress.from_url("mqtts://u:p@broker.example", ca_file=certificates.ca_file)
    assert (secure.tls, secure.port, secure.ca_file) == (True, 8883, certificates.ca_file)
    assert secure.tls_context() is not None
    plain = BrokerAddress.from_url("mqtt://u:p@broker.example", ca_file=certificates.ca_file)
    assert (plain.tls, plain.port, plain.ca_file) == (False, 1883, None)
    assert plain.tls_context() is None
    car = BrokerEndpoint.from_url("mqtts://broker.example")
    assert (car.tls, car.port) == (True, 8883)
    assert BrokerEndpoint.from_url("mqtt://broker.example").tls is False


def test_cars_are_told_the_tls_address_of_the_broker() -> None:
    settings = Settings(env="test", mqtt_url="mqtts://caas-platform:secret@broker.example")
    assert car_broker_url(settings) == "mqtts://broker.example:8883"


def test_a_missing_ca_file_is_refused_at_start(tmp_path: Path) -> None:
    from caas.runtime import StartupError, read_settings

    with pytest.raises(StartupError, match=r"CAAS_MQTT_CA_FILE: .* is not a file"):
        read_settings(mqtt_ca_file=tmp_path / "nowhere.pem")
