"""A broker of our own on 127.0.0.1 for the demo, the benchmarks and the tests.

Mosquitto when it is installed (the same broker as production), else the embedded amqtt broker.
Either way the broker refuses anonymous clients, has an administrator, and has the platform's
service account (`caas-platform`) with `caas.iot.rules.platform_permissions()`; `service_url`
is what `CAAS_MQTT_URL` should be for the platform to use it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from caas.core.settings import Settings
from caas.iot.broker import BrokerAddress, BrokerAdmin, BrokerAdminError, DynsecAdmin
from caas.iot.embedded import CredentialStore, EmbeddedBroker
from caas.iot.mosquitto import PrivateMosquitto, write_car_accounts
from caas.iot.mosquitto import available as mosquitto_available
from caas.iot.passwords import new_password
from caas.iot.rules import platform_permissions

SERVICE_USERNAME = "caas-platform"
BrokerKind = Literal["mosquitto", "embedded"]

# Embedded brokers running in this process, by address: their accounts are changed in process.
_embedded: dict[tuple[str, int], EmbeddedBroker] = {}


@dataclass
class LocalBroker:
    """A running broker of ours, with the credentials of its administrator and service account."""

    kind: BrokerKind
    host: str
    port: int
    admin_username: str
    admin_password: str
    service_username: str = SERVICE_USERNAME
    service_password: str = field(default_factory=new_password, repr=False)
    _mosquitto: PrivateMosquitto | None = field(default=None, repr=False)
    _embedded: EmbeddedBroker | None = field(default=None, repr=False)
    _admin: BrokerAdmin | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def service_url(self) -> str:
        """`CAAS_MQTT_URL` for the platform: this broker with the service account."""
        user, password = (
            quote(self.service_username, safe=""),
            quote(self.service_password, safe=""),
        )
        return f"mqtt://{user}:{password}@{self.host}:{self.port}"

    def admin(self) -> BrokerAdmin:
        """The administrator of this broker (one connection, reused)."""
        if self._admin is None:
            if self._embedded is not None:
                self._admin = self._embedded.admin()
            else:
                self._admin = DynsecAdmin(
                    self.host, self.port, self.admin_username, self.admin_password
                )
        return self._admin

    def add_car(self, vin: str, password: str | None = None) -> str:
        """Give the car `vin` an account (a new random password unless given); return it."""
        password = password or new_password()
        self.admin().add_car(vin, password)
        return password

    def load_cars(self, cars: list[tuple[str, str]]) -> bool:
        """Give many cars, `(vin, password)`, their accounts at once: a private Mosquitto is
        stopped, the accounts written in its plugin's file, and started again on the same port
        (clients connected meanwhile are cut and reconnect). False, with nothing done, for the
        embedded broker: its caller adds the cars one by one."""
        if self._mosquitto is None:
            return False
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        self._mosquitto.stop()
        write_car_accounts(self._mosquitto.dynsec_path, cars)
        self._mosquitto.restart()
        return True

    def stop(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        if self._mosquitto is not None:
            self._mosquitto.stop()
        if self._embedded is not None:
            _embedded.pop((self.host, self.port), None)
            self._embedded.stop()

    def __enter__(self) -> LocalBroker:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def start_local_broker(
    data_dir: Path,
    *,
    kind: BrokerKind | None = None,
    port: int | None = None,
    admin_username: str = "caas-admin",
    admin_password: str | None = None,
) -> LocalBroker:
    """Start a broker keeping its state in `data_dir`: Mosquitto if installed (or `kind`)."""
    kind = kind or ("mosquitto" if mosquitto_available() else "embedded")
    admin_password = admin_password or secrets.token_urlsafe(24)
    if kind == "mosquitto":
        mosquitto = PrivateMosquitto(
            data_dir, port, admin_username=admin_username, admin_password=admin_password
        ).start()
        broker = LocalBroker(
            kind, mosquitto.host, mosquitto.port, admin_username, admin_password,
            _mosquitto=mosquitto,
        )  # fmt: skip
    else:
        data_dir.mkdir(parents=True, exist_ok=True)
        store = CredentialStore(data_dir / "embedded-accounts.json")
        embedded = EmbeddedBroker(port=port or 0, store=store).start()
        _embedded[(embedded.host, embedded.port)] = embedded
        broker = LocalBroker(
            kind, embedded.host, embedded.port, admin_username, admin_password, _embedded=embedded
        )
    try:
        permissions = platform_permissions()
        broker.admin().add_service_account(
            broker.service_username,
            broker.service_password,
            subscribe=list(permissions.subscribe),
            publish=list(permissions.publish),
        )
    except BaseException:
        broker.stop()
        raise
    return broker


def broker_admin(settings: Settings) -> BrokerAdmin:
    """The administrator of the broker at `CAAS_MQTT_URL`: in process for an embedded broker
    started here, else Mosquitto's dynamic security API with the administrator's account."""
    if settings.mqtt_url is None:
        raise BrokerAdminError("CAAS_MQTT_URL is not set: no broker to administer")
    address = BrokerAddress.from_settings(settings)
    embedded = _embedded.get((address.host, address.port))
    if embedded is not None:
        return embedded.admin()
    return DynsecAdmin.from_settings(settings)
