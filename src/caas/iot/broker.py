"""Broker accounts: each car's credentials and rights, and the platform's service account.

`BrokerAdmin` is what the platform needs from any broker; `DynsecAdmin` speaks Mosquitto's
dynamic security API over MQTT (`$CONTROL/dynamic-security/v1`) with the administrator's
account, so it works the same on the private Mosquitto of the demo and on a production broker;
`caas.iot.embedded.EmbeddedAdmin` keeps the embedded amqtt broker's accounts in process.

Mosquitto 2.0's dynamic security plugin has no `%u`/`%c` substitution in ACL topics (the
plugin of 2.0.11 matches ACLs with `mosquitto_topic_matches_sub`, without patterns), and every
topic of a car names its VIN, so each car gets a role of its own (`car-{VIN}`) granting exactly
its topics. A car's account also pins its client id to its VIN: nobody else can connect as
that client id, so nobody can take over the car's session (MQTT lets a newer connection with the
same client id push the older one out).
"""

from __future__ import annotations

import itertools
import json
import ssl
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from caas.core.settings import Settings
from caas.iot.rules import Permissions, car_permissions
from caas.protocol import vin as vin_rules

log = structlog.get_logger(__name__)

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"

_ROLE_EXISTS = "Role already exists"
_CLIENT_EXISTS = "Client already exists"
_NOT_FOUND = ("Client not found", "Role not found")


class BrokerAdminError(RuntimeError):
    """The broker refused an account change, or could not be reached to make it."""


class BrokerAccountMissing(BrokerAdminError):
    """The account to change does not exist on the broker."""


class BrokerAdmin(Protocol):
    """Creates and removes the broker accounts of cars and of the platform's own services."""

    def add_car(self, vin: str, password: str) -> None:
        """Create the car's account (username and client id: its VIN), or reset its password and
        rights if it exists: a retried provisioning ends in the same state."""

    def remove_car(self, vin: str) -> None:
        """Delete the car's account (a connected car is disconnected); nothing if there is none."""

    def set_password(self, vin: str, password: str) -> None:
        """Give the car a new password (BrokerAccountMissing when it has no account)."""

    def add_service_account(
        self, username: str, password: str, *, subscribe: list[str], publish: list[str]
    ) -> None:
        """Create or update an account of the platform with exactly these rights (topic filters,
        `$share/{group}/...` forms included in `subscribe` where shared subscriptions are used)."""

    def close(self) -> None:
        """Release the connection to the broker, if any."""


def car_role(vin: str) -> str:
    return f"car-{vin}"


def service_role(username: str) -> str:
    return f"service-{username}"


def role_acls(permissions: Permissions) -> list[dict[str, Any]]:
    """The dynamic security ACLs granting exactly `permissions`.

    Subscriptions are checked against the filter as the client sends it (`$share/...` included),
    deliveries against the message's topic, so both are granted.
    """
    acls: list[dict[str, Any]] = []
    for topic in permissions.publish:
        acls.append({"acltype": "publishClientSend", "topic": topic, "allow": True})
    for topic_filter in permissions.subscribe:
        acls.append({"acltype": "subscribePattern", "topic": topic_filter, "allow": True})
    for topic_filter in permissions.receive_filters():
        acls.append({"acltype": "publishClientReceive", "topic": topic_filter, "allow": True})
    return acls


MQTT_PORT = 1883
MQTTS_PORT = 8883
PLAIN_SCHEMES = ("mqtt", "tcp")
TLS_SCHEMES = ("mqtts", "ssl")


@dataclass(frozen=True)
class BrokerAddress:
    """Where a broker listens, the account to use there, and whether to speak TLS to it (with
    the CA certificates in `ca_file`, or the system's)."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: Path | None = None

    @classmethod
    def from_url(cls, url: str, *, ca_file: Path | None = None) -> BrokerAddress:
        """`mqtt://user:password@host:port` (credentials optional; port 1883 by default), or
        `mqtts://...` for TLS (port 8883 by default)."""
        parsed = urlparse(url)
        if parsed.scheme not in PLAIN_SCHEMES + TLS_SCHEMES:
            raise ValueError(f"an MQTT URL starts with mqtt:// or mqtts://, not {parsed.scheme}://")
        tls = parsed.scheme in TLS_SCHEMES
        return cls(
            host=parsed.hostname or "127.0.0.1",
            port=parsed.port or (MQTTS_PORT if tls else MQTT_PORT),
            username=unquote(parsed.username) if parsed.username else None,
            password=unquote(parsed.password) if parsed.password else None,
            tls=tls,
            ca_file=ca_file if tls else None,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> BrokerAddress:
        """The broker at `CAAS_MQTT_URL`, trusting `CAAS_MQTT_CA_FILE` when it speaks TLS."""
        if settings.mqtt_url is None:
            raise ValueError("CAAS_MQTT_URL is not set: no broker")
        return cls.from_url(settings.mqtt_url, ca_file=settings.mqtt_ca_file)

    def tls_context(self) -> ssl.SSLContext | None:
        """What a client wraps its connection in: None for plain MQTT; for TLS, a context that
        checks the broker's certificate against `ca_file` (else the system's CAs) and that it
        names `host`, as a browser would."""
        if not self.tls:
            return None
        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)

    def explain(self, error: object) -> str:
        """`error` from connecting here, in words a person can act on when it is the broker's
        certificate that was refused."""
        text = str(error)
        if self.tls and "CERTIFICATE_VERIFY_FAILED" in text:
            trusted = f"the CA file {self.ca_file}" if self.ca_file else "the system's CAs"
            return (
                f"the broker at {self.host}:{self.port} presented a certificate that {trusted} "
                f"does not vouch for (CAAS_MQTT_CA_FILE), or that does not name {self.host}: "
                f"{text}"
            )
        return text


class DynsecAdmin:
    """Accounts on Mosquitto through its dynamic security plugin, over one MQTT connection.

    Thread-safe; connects on first use and again after the connection was lost. Every call waits
    for the plugin's answer, so when it returns the change is in force on the broker.
    """

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        password: str,
        *,
        timeout: float = 10.0,
        tls: bool = False,
        ca_file: Path | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.address = BrokerAddress(host, port, username, tls=tls, ca_file=ca_file)
        self.username = username
        self._password = password
        self.timeout = timeout
        self._lock = threading.Lock()
        self._answers: dict[str, list[dict[str, Any]]] = {}
        self._answered = threading.Condition()
        self._client: paho.Client | None = None
        self._batches = itertools.count(1)
        self._session = uuid.uuid4().hex[:8]

    @classmethod
    def from_settings(cls, settings: Settings) -> DynsecAdmin:
        if settings.mqtt_url is None:
            raise BrokerAdminError("CAAS_MQTT_URL is not set: no broker to administer")
        address = BrokerAddress.from_settings(settings)
        return cls(
            address.host,
            address.port,
            settings.mqtt_admin_username,
            settings.mqtt_admin_password,
            tls=address.tls,
            ca_file=address.ca_file,
        )

    # --- BrokerAdmin ---

    def add_car(self, vin: str, password: str) -> None:
        vin_rules.validate(vin)
        self._upsert(
            username=vin,
            password=password,
            clientid=vin,
            role=car_role(vin),
            acls=role_acls(car_permissions(vin)),
        )
        log.info("broker.car_added", vin=vin)

    def remove_car(self, vin: str) -> None:
        self.execute(
            [
                {"command": "deleteClient", "username": vin},
                {"command": "deleteRole", "rolename": car_role(vin)},
            ],
            tolerate=_NOT_FOUND,
        )
        log.info("broker.car_removed", vin=vin)

    def set_password(self, vin: str, password: str) -> None:
        [answer] = self.execute(
            [{"command": "setClientPassword", "username": vin, "password": password}],
            tolerate=("Client not found",),
        )
        if answer.get("error"):
            raise BrokerAccountMissing(f"the broker has no account for {vin}")
        log.info("broker.car_password_set", vin=vin)

    def add_service_account(
        self, username: str, password: str, *, subscribe: list[str], publish: list[str]
    ) -> None:
        permissions = Permissions(publish=tuple(publish), subscribe=tuple(subscribe))
        self._upsert(
            username=username,
            password=password,
            clientid=None,
            role=service_role(username),
            acls=role_acls(permissions),
        )
        log.info("broker.service_account_added", username=username)

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()

    # --- the plugin's API ---

    def _upsert(
        self,
        *,
        username: str,
        password: str,
        clientid: str | None,
        role: str,
        acls: list[dict[str, Any]],
    ) -> None:
        # Roles are never deleted while a client holds them: Mosquitto 2.0.11 leaves a dangling
        # entry in the client's role list when it deletes such a role.
        client_fields: dict[str, Any] = {"username": username, "password": password}
        if clientid is not None:
            client_fields["clientid"] = clientid
        role_answer, client_answer = self.execute(
            [
                {"command": "createRole", "rolename": role, "acls": acls},
                {"command": "createClient", **client_fields, "roles": [{"rolename": role}]},
            ],
            tolerate=(_ROLE_EXISTS, _CLIENT_EXISTS),
        )
        if role_answer.get("error"):
            self._sync_role(role, acls)
        if client_answer.get("error"):
            self._repair_client(username, password, clientid, role)

    def _sync_role(self, role: str, acls: list[dict[str, Any]]) -> None:
        """Give an existing role exactly `acls`, ACL by ACL."""
        [answer] = self.execute([{"command": "getRole", "rolename": role}])
        current = {(a["acltype"], a["topic"]): a for a in answer["data"]["role"]["acls"]}
        wanted = {(a["acltype"], a["topic"]): a for a in acls}
        stale = [k for k, acl in current.items() if wanted.get(k, {}).get("allow") != acl["allow"]]
        missing = [
            k for k, acl in wanted.items() if current.get(k, {}).get("allow") != acl["allow"]
        ]
        commands: list[dict[str, Any]] = [
            {"command": "removeRoleACL", "rolename": role, "acltype": acltype, "topic": topic}
            for acltype, topic in stale
        ]
        commands += [{"command": "addRoleACL", "rolename": role, **wanted[key]} for key in missing]
        if commands:
            self.execute(commands)

    def _repair_client(self, username: str, password: str, clientid: str | None, role: str) -> None:
        """Bring an existing account to the new password, client id and role."""
        [answer] = self.execute([{"command": "getClient", "username": username}])
        client = answer["data"]["client"]
        commands: list[dict[str, Any]] = [
            {"command": "setClientPassword", "username": username, "password": password}
        ]
        if clientid is not None and client.get("clientid") != clientid:
            commands.append({"command": "modifyClient", "username": username, "clientid": clientid})
        if role not in {held["rolename"] for held in client.get("roles", [])}:
            commands.append({"command": "addClientRole", "username": username, "rolename": role})
        self.execute(commands)

    def execute(
        self, commands: list[dict[str, Any]], *, tolerate: tuple[str, ...] = ()
    ) -> list[dict[str, Any]]:
        """Send commands in one message and return the plugin's answers, in order.

        An answer whose error is not one of `tolerate` raises BrokerAdminError.
        """
        batch = f"{self._session}-{next(self._batches)}"
        tagged = [
            {**command, "correlationData": f"{batch}:{i}"} for i, command in enumerate(commands)
        ]
        with self._lock:
            client = self._connected()
            info = client.publish(CONTROL_TOPIC, json.dumps({"commands": tagged}), qos=1)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._drop(client)
                raise BrokerAdminError(
                    f"could not send to the broker: {paho.error_string(info.rc)}"
                )
            answers = self._wait_for(batch, len(commands))
        for command, answer in zip(commands, answers, strict=True):
            error = answer.get("error")
            if error and error not in tolerate:
                raise BrokerAdminError(f"{command['command']} refused by the broker: {error}")
        return answers

    def _wait_for(self, batch: str, count: int) -> list[dict[str, Any]]:
        with self._answered:
            if not self._answered.wait_for(lambda: batch in self._answers, self.timeout):
                raise BrokerAdminError(f"the broker did not answer within {self.timeout} s")
            answers = self._answers.pop(batch)
        if len(answers) != count:
            raise BrokerAdminError(f"the broker answered {len(answers)} of {count} commands")
        return answers

    def _on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        try:
            responses = json.loads(message.payload)["responses"]
        except (ValueError, KeyError, TypeError):
            log.warning("broker.unreadable_answer", payload=message.payload[:200])
            return
        batches: dict[str, list[dict[str, Any]]] = {}
        for response in responses:
            batch = str(response.get("correlationData", "")).rpartition(":")[0]
            batches.setdefault(batch, []).append(response)
        with self._answered:
            self._answers.update(batches)
            self._answered.notify_all()

    def _connected(self) -> paho.Client:
        if self._client is not None and self._client.is_connected():
            return self._client
        if self._client is not None:
            self._drop(self._client)
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"caas-admin-{uuid.uuid4().hex[:12]}",
            protocol=paho.MQTTv311,
        )
        client.username_pw_set(self.username, self._password)
        tls = self.address.tls_context()
        if tls is not None:
            client.tls_set_context(tls)
        client.on_message = self._on_message
        ready = threading.Event()
        outcome: dict[str, Any] = {}

        def on_connect(*args: Any) -> None:
            outcome["reason"] = args[3]
            ready.set()

        def on_subscribe(*args: Any) -> None:
            outcome["granted"] = args[3]
            ready.set()

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        try:
            client.connect(self.host, self.port, keepalive=30)
        except ssl.SSLError as error:
            raise BrokerAdminError(self.address.explain(error)) from error
        except OSError as error:
            raise BrokerAdminError(
                f"broker at {self.host}:{self.port} unreachable: {error}"
            ) from error
        client.loop_start()
        if not ready.wait(self.timeout) or outcome["reason"].is_failure:
            self._drop(client)
            raise BrokerAdminError(
                f"the broker refused the administrator: {outcome.get('reason', 'no answer')}"
            )
        ready.clear()
        client.subscribe(RESPONSE_TOPIC, qos=1)
        if not ready.wait(self.timeout) or any(code.is_failure for code in outcome["granted"]):
            self._drop(client)
            raise BrokerAdminError("the administrator may not read the plugin's answers")
        self._client = client
        return client

    def _drop(self, client: paho.Client) -> None:
        client.disconnect()
        client.loop_stop()
        if self._client is client:
            self._client = None
