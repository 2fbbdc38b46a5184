"""The private Mosquitto: starts on a free port, refuses strangers, keeps its accounts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from caas.core.net import port_open
from caas.iot.broker import BrokerAdminError, DynsecAdmin
from caas.iot.mosquitto import PrivateMosquitto, available, write_car_accounts
from caas.iot.passwords import new_password
from caas.protocol.vin import make_vin

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not available(), reason="mosquitto is not installed"),
]

VIN = make_vin("VCA", "BRL00", "T", "M", 7)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _connects(broker: PrivateMosquitto, username: str, password: str) -> bool:
    try:
        async with aiomqtt.Client(
            broker.host, broker.port, username=username, password=password, identifier=username
        ):
            return True
    except aiomqtt.MqttCodeError:
        return False


async def test_a_restarted_broker_keeps_the_cars_accounts(tmp_path: Path) -> None:
    password = new_password()
    with PrivateMosquitto(tmp_path, admin_password="first admin password") as broker:
        admin = DynsecAdmin(broker.host, broker.port, broker.admin_username, broker.admin_password)
        admin.add_car(VIN, password)
        admin.close()
    assert not broker.running
    assert not port_open(broker.host, broker.port)

    with PrivateMosquitto(tmp_path, admin_password="second admin password") as broker:
        assert await _connects(broker, VIN, password)
        assert not await _connects(broker, broker.admin_username, "first admin password")
        assert await _connects(broker, broker.admin_username, "second admin password")


async def test_the_broker_listens_on_loopback_only_and_refuses_anonymous_clients(
    tmp_path: Path,
) -> None:
    with PrivateMosquitto(tmp_path) as broker:
        config = broker.config_path.read_text()
        assert f"listener {broker.port} 127.0.0.1" in config
        assert "allow_anonymous false" in config
        assert "set_tcp_nodelay true" in config
        with pytest.raises(aiomqtt.MqttCodeError):
            async with aiomqtt.Client(broker.host, broker.port):
                pass
        defaults = json.loads(broker.dynsec_path.read_text())["defaultACLAccess"]
        assert defaults["publishClientSend"] is defaults["subscribe"] is False


def _account(config: dict[str, Any], vin: str) -> tuple[str, list[str], set[tuple[str, str, bool]]]:
    """A car's account in the plugin's file, with its VIN written as `VIN`: client id, roles,
    and its role's ACLs."""
    client = next(c for c in config["clients"] if c["username"] == vin)
    role = next(r for r in config["roles"] if r["rolename"] == f"car-{vin}")
    return (
        client["clientid"].replace(vin, "VIN"),
        [held["rolename"].replace(vin, "VIN") for held in client["roles"]],
        {(acl["acltype"], acl["topic"].replace(vin, "VIN"), acl["allow"]) for acl in role["acls"]},
    )


async def test_cars_written_in_the_file_get_the_accounts_the_plugins_api_makes(
    tmp_path: Path,
) -> None:
    loaded = {make_vin("VCA", "BRL00", "T", "M", n): new_password() for n in (8, 9)}
    with PrivateMosquitto(tmp_path) as broker:
        admin = DynsecAdmin(broker.host, broker.port, broker.admin_username, broker.admin_password)
        admin.add_car(VIN, new_password())
        admin.close()
        port = broker.port
        broker.stop()
        assert write_car_accounts(broker.dynsec_path, loaded.items()) == 2
        broker.restart()
        assert broker.port == port

        config = json.loads(broker.dynsec_path.read_text())
        first, second = loaded
        assert _account(config, first) == _account(config, second) == _account(config, VIN)
        assert await _connects(broker, first, loaded[first])
        assert not await _connects(broker, first, loaded[second])
        with pytest.raises(aiomqtt.MqttCodeError):  # the client id is pinned to the VIN
            async with aiomqtt.Client(
                broker.host, broker.port, username=first, password=loaded[first], identifier=second
            ):
                pass


def test_the_administrator_of_a_broker_that_is_down_says_so(tmp_path: Path) -> None:
    with PrivateMosquitto(tmp_path) as broker:
        host, port = broker.host, broker.port
    admin = DynsecAdmin(host, port, "caas-admin", "whatever", timeout=2)
    with pytest.raises(BrokerAdminError, match="unreachable"):
        admin.add_car(VIN, new_password())


def test_a_wrong_administrator_password_is_refused(tmp_path: Path) -> None:
    with PrivateMosquitto(tmp_path) as broker:
        admin = DynsecAdmin(broker.host, broker.port, broker.admin_username, "wrong", timeout=2)
        with pytest.raises(BrokerAdminError, match="refused the administrator"):
            admin.add_car(VIN, new_password())
