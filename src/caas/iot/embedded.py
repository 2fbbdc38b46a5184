"""The embedded MQTT broker (amqtt, MQTT 3.1.1 only): the demo's fallback when Mosquitto is absent.

Accounts live in a `CredentialStore` (salted scrypt hashes and each account's rights, kept in a
JSON file when given one, so a restarted demo still knows its cars). Two amqtt plugins enforce
the same rules as Mosquitto's roles (`caas.iot.rules`): `CarAuthPlugin` checks the password, a
car's client id (its VIN) and that the last will goes to a topic the account may publish to;
`CarTopicPlugin` checks every subscription, publication and delivery.

amqtt 0.12 needs these repairs to keep cars apart (made in `CaasBroker`, `CredentialStore`
and `LimitedReader`):
- it merges a reconnecting client's session into the existing one (or deletes it, for a clean
  session) before authenticating the newcomer, so anybody could disturb a car's session by
  using its client id with a wrong password: we authenticate first;
- it lets any account connect with any client id, so the platform's account could take a
  car's session over with its VIN: a VIN as client id is reserved to the car's own account;
- when a client connects it replays the retained messages of every filter that any client
  subscribed to, without checking who may read them: we replay only the client's own
  subscriptions, and only what it may receive;
- it has no shared subscriptions: `$share/{group}/{filter}` is matched as `{filter}`. Every
  member of a group then receives every message (no load splitting): fine for the demo's single
  worker, which is all the embedded broker is for;
- it has no limit on a message's size: a client's connection is read through `LimitedReader`,
  which refuses (and so closes the connection on) any single read longer than
  `caas.iot.rules.MAX_PACKET_SIZE`, before the bytes are taken in. A packet's payload is read
  in one piece, so this bounds every message as Mosquitto's `max_packet_size` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import threading
from asyncio import StreamReader, StreamWriter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from amqtt.adapters import StreamReaderAdapter, StreamWriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session
from amqtt.utils import gen_client_id

from caas.core.net import free_port
from caas.iot.broker import BrokerAccountMissing
from caas.iot.passwords import hash_password, verify_password
from caas.iot.rules import MAX_PACKET_SIZE, Permissions, car_permissions, unshared
from caas.protocol import vin as vin_rules

log = structlog.get_logger(__name__)

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Account:
    username: str
    password_hash: str
    permissions: Permissions
    client_id: str | None = None  # pinned: the account may connect only with this client id


class CredentialStore:
    """The embedded broker's accounts; thread-safe, saved to `path` (JSON) after every change."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._accounts: dict[str, Account] = {}
        # Digest of the last password verified per account: reconnections skip scrypt.
        self._verified: dict[str, bytes] = {}
        if path is not None and path.exists():
            self._load(path)

    def _load(self, path: Path) -> None:
        for username, stored in json.loads(path.read_text()).items():
            self._accounts[username] = Account(
                username=username,
                password_hash=stored["password_hash"],
                permissions=Permissions(
                    publish=tuple(stored["publish"]), subscribe=tuple(stored["subscribe"])
                ),
                client_id=stored.get("client_id"),
            )

    def _save(self) -> None:
        if self.path is None:
            return
        document = {
            account.username: {
                "password_hash": account.password_hash,
                "publish": list(account.permissions.publish),
                "subscribe": list(account.permissions.subscribe),
                "client_id": account.client_id,
            }
            for account in self._accounts.values()
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(document, indent=1))
        temporary.chmod(0o600)
        temporary.replace(self.path)

    def put(
        self, username: str, password: str, permissions: Permissions, *, client_id: str | None
    ) -> None:
        account = Account(username, hash_password(password), permissions, client_id)
        with self._lock:
            self._accounts[username] = account
            self._verified.pop(username, None)
            self._save()

    def set_password(self, username: str, password: str) -> None:
        password_hash = hash_password(password)
        with self._lock:
            account = self._accounts.get(username)
            if account is None:
                raise BrokerAccountMissing(f"the broker has no account for {username}")
            self._accounts[username] = Account(
                username, password_hash, account.permissions, account.client_id
            )
            self._verified.pop(username, None)
            self._save()

    def remove(self, username: str) -> None:
        with self._lock:
            self._accounts.pop(username, None)
            self._verified.pop(username, None)
            self._save()

    def get(self, username: str | None) -> Account | None:
        return self._accounts.get(username) if username else None

    def authenticate(
        self, username: str | None, password: str | None, client_id: str | None
    ) -> Account | None:
        """The account when the password is right and the client id allowed, else None.

        An account pinned to a client id connects only with it; and a car's client id (any
        valid VIN) is reserved to the account pinned to it, so no other account (the
        platform's included) can take a car's session over by connecting with its VIN.
        """
        account = self.get(username)
        if account is None or password is None:
            return None
        if account.client_id is not None and client_id != account.client_id:
            return None
        if account.client_id is None and client_id and vin_rules.is_valid(client_id):
            log.warning("embedded_broker.car_client_id_refused", username=username)
            return None
        digest = hashlib.sha256(password.encode()).digest()
        known = self._verified.get(account.username)
        if known is None or not hmac.compare_digest(known, digest):
            if not verify_password(account.password_hash, password):
                return None
            with self._lock:
                if self._accounts.get(account.username) is account:  # not changed meanwhile
                    self._verified[account.username] = digest
        return account


def _store_of(plugin: BaseAuthPlugin | BaseTopicPlugin) -> CredentialStore:
    store = getattr(plugin.context.config, "store", None)
    if not isinstance(store, CredentialStore):
        raise AMQTTError("the caas broker plugins need a CredentialStore in their config")
    return store


class CarAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt is untyped
    """Password, pinned client id, and a last will only to a topic the account may publish to."""

    @dataclass
    class Config:
        store: Any = None

    async def authenticate(self, *, session: Session) -> bool:
        store = _store_of(self)
        account = await asyncio.to_thread(
            store.authenticate, session.username, session.password, session.client_id
        )
        if account is None:
            log.info("embedded_broker.refused", username=session.username)
            return False
        if session.will_flag and not account.permissions.may_publish(session.will_topic or ""):
            log.info("embedded_broker.will_refused", username=session.username)
            return False
        return True


class CarTopicPlugin(BaseTopicPlugin):  # type: ignore[misc]  # amqtt is untyped
    """Subscriptions, publications and deliveries, each checked against the account's rights."""

    @dataclass
    class Config:
        store: Any = None

    async def topic_filtering(
        self,
        *,
        session: Session | None = None,
        topic: str | None = None,
        action: Action | None = None,
    ) -> bool:
        account = _store_of(self).get(session.username if session else None)
        if account is None or not topic:
            return False
        permissions = account.permissions
        if action == Action.SUBSCRIBE:
            return permissions.may_subscribe(topic)
        if action == Action.PUBLISH:
            return permissions.may_publish(topic)
        if action == Action.RECEIVE:
            return permissions.may_receive(topic)
        return False


class PacketTooLarge(AMQTTError):  # type: ignore[misc]  # amqtt is untyped
    """A client sent a packet longer than `MAX_PACKET_SIZE`: its connection is closed."""


class LimitedReader(StreamReaderAdapter):  # type: ignore[misc]  # amqtt is untyped
    """A client connection's reader that refuses a read longer than `limit` bytes.

    amqtt reads a packet's payload with one read of its announced length: refusing it there
    drops the message before its bytes are received, and amqtt's reader ends the connection.
    """

    def __init__(self, reader: StreamReader, limit: int = MAX_PACKET_SIZE) -> None:
        super().__init__(reader)
        self.limit = limit

    async def read(self, n: int = -1) -> bytes:
        if n > self.limit:
            log.warning("embedded_broker.packet_too_large", size=n, limit=self.limit)
            raise PacketTooLarge(f"a packet of {n} bytes, over the limit of {self.limit}")
        data: bytes = await super().read(n)
        return data


class CaasBroker(Broker):  # type: ignore[misc]  # amqtt is untyped
    """amqtt's broker with the repairs described in this module's docstring."""

    async def stream_connected(
        self, reader: StreamReader, writer: StreamWriter, listener_name: str
    ) -> None:
        # As amqtt's, with the connection read through a LimitedReader.
        await self._client_connected(
            listener_name, LimitedReader(reader), StreamWriterAdapter(writer)
        )

    async def _initialize_client_session(
        self, reader: Any, writer: Any, remote_address: str, remote_port: int
    ) -> tuple[BrokerProtocolHandler, Session]:
        # As amqtt's, except that the newcomer is authenticated before any existing session of
        # its client id is touched.
        try:
            handler, session = await BrokerProtocolHandler.init_from_connect(
                reader, writer, self.plugins_manager
            )
        except MQTTError:
            await writer.close()
            raise
        except NoDataError as error:
            raise AMQTTError(error) from error
        if not await self._authenticate(session, self.listeners_config["default"]):
            await ConnackPacket.build(0, NOT_AUTHORIZED).to_stream(writer)
            await writer.close()
            raise AMQTTError(f"{remote_address}:{remote_port} refused: not authorised")
        existing = self._sessions.get(session.client_id or "")
        if session.clean_session:
            if session.client_id:
                await self._delete_session(session.client_id)
            else:
                session.client_id = gen_client_id()
            session.parent = 0
        elif existing is not None:
            old = existing[0]
            for name in ("will_flag", "will_message", "will_topic", "will_qos", "will_retain"):
                setattr(old, name, getattr(session, name))
            old.keep_alive, old.username, old.password = (
                session.keep_alive,
                session.username,
                session.password,
            )
            session = old
            session.parent = 1
        else:
            session.parent = 0
        delay = self.config.get("timeout-disconnect-delay", 0)
        if session.keep_alive > 0 and isinstance(delay, int):
            session.keep_alive += delay
        return handler, session

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        topic_filter, qos = subscription
        subscribers = self._subscriptions.get(topic_filter, [])
        if all(subscriber.client_id != session.client_id for subscriber, _ in subscribers):
            return  # another client's filter: not this client's business
        handler = self._get_handler(session)
        if handler is None:
            return
        tasks = [
            asyncio.ensure_future(
                handler.mqtt_publish(
                    retained.topic, retained.data, min(qos, retained.qos or qos), retain=True
                )
            )
            for topic, retained in list(self._retained_messages.items())
            if self._matches(topic, topic_filter)
            and await self._topic_filtering(session, topic, Action.RECEIVE)
        ]
        if tasks:
            await asyncio.wait(tasks)

    def _matches(self, topic: str, a_filter: str) -> bool:
        matched: bool = super()._matches(topic, unshared(a_filter))
        return matched


def broker_config(port: int, store: CredentialStore) -> dict[str, Any]:
    plugins = {
        f"{__name__}.CarAuthPlugin": {"store": store},
        f"{__name__}.CarTopicPlugin": {"store": store},
    }
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{HOST}:{port}"}},
        "plugins": plugins,
    }


@dataclass
class EmbeddedBroker:
    """The amqtt broker on 127.0.0.1, run in its own thread and event loop."""

    port: int = 0
    store: CredentialStore = field(default_factory=CredentialStore)
    host: str = HOST
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, init=False, repr=False)
    _stopped: asyncio.Event | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def admin(self) -> EmbeddedAdmin:
        return EmbeddedAdmin(self.store)

    def start(self, timeout: float = 10.0) -> EmbeddedBroker:
        self.port = self.port or free_port(self.host)
        ready = threading.Event()
        failure: list[BaseException] = []

        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self._stopped = asyncio.Event()
            broker = CaasBroker(broker_config(self.port, self.store))
            try:
                await broker.start()
            except Exception as error:  # noqa: BLE001 - reported to the starting thread
                failure.append(error)
                ready.set()
                return
            ready.set()
            await self._stopped.wait()
            with contextlib.suppress(Exception):
                await broker.shutdown()

        self._thread = threading.Thread(
            target=asyncio.run, args=(serve(),), name="caas-embedded-mqtt", daemon=True
        )
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError(f"the embedded MQTT broker did not start within {timeout} s")
        if failure:
            raise RuntimeError(f"the embedded MQTT broker did not start: {failure[0]}")
        log.info("embedded_broker.started", url=self.url)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        loop, stopped, thread = self._loop, self._stopped, self._thread
        if loop is None or stopped is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop may have ended already
            loop.call_soon_threadsafe(stopped.set)
        thread.join(timeout)
        self._thread = self._loop = self._stopped = None
        log.info("embedded_broker.stopped", url=self.url)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


class EmbeddedAdmin:
    """`BrokerAdmin` of the embedded broker: changes its credential store directly."""

    def __init__(self, store: CredentialStore) -> None:
        self.store = store

    def add_car(self, vin: str, password: str) -> None:
        vin_rules.validate(vin)
        self.store.put(vin, password, car_permissions(vin), client_id=vin)

    def remove_car(self, vin: str) -> None:
        self.store.remove(vin)

    def set_password(self, vin: str, password: str) -> None:
        self.store.set_password(vin, password)

    def add_service_account(
        self, username: str, password: str, *, subscribe: list[str], publish: list[str]
    ) -> None:
        permissions = Permissions(publish=tuple(publish), subscribe=tuple(subscribe))
        self.store.put(username, password, permissions, client_id=None)

    def close(self) -> None:
        pass
