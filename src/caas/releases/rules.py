"""The rules of releases and rollouts that need no database: their state machines, the order of
the cars, the size of each wave and when a rollout moves on, halts or completes."""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from packaging.version import InvalidVersion, Version

from caas.core.state_machine import StateMachine

RELEASE: Final = StateMachine(
    "release", {"draft": ("published",), "published": ("withdrawn",), "withdrawn": ()}
)
ROLLOUT: Final = StateMachine(
    "rollout",
    {
        "planned": ("running", "cancelled"),
        "running": ("paused", "halted", "cancelled", "completed"),
        "paused": ("running", "cancelled"),
        "halted": ("running", "cancelled"),
        "cancelled": (),
        "completed": (),
    },
)
# A car's update: offered in its manifest (after its owner accepted, when the rollout asks
# owners first: `awaiting_owner`), then the steps the car reports. A car may skip steps (a
# lost QoS 1 message arrives after the next one), never go back.
TARGET: Final = StateMachine(
    "rollout_target",
    {
        "pending": ("offered", "awaiting_owner"),
        "awaiting_owner": ("offered",),
        "offered": ("downloading", "installing", "installed", "failed", "rolled_back"),
        "downloading": ("installing", "installed", "failed", "rolled_back"),
        "installing": ("installed", "failed", "rolled_back"),
        "installed": (),
        "failed": (),
        "rolled_back": (),
    },
)
ACTIVE_ROLLOUT_STATES: Final = frozenset({"running", "paused", "halted"})
# A car whose update is under way: its manifest carries the order, it may download the image.
UNDER_WAY: Final = frozenset({"offered", "downloading", "installing"})
SUCCEEDED: Final = frozenset({"installed"})
FAILED: Final = frozenset({"failed", "rolled_back"})
# Asked and not yet accepted: the owner's choice, neither a success nor a failure.
AWAITING: Final = frozenset({"awaiting_owner"})
MAX_AUTO_INSTALL_DAYS: Final = 90
DEFAULT_WAVES: Final = (1, 10, 50, 100)

Decision = Literal["wait", "next_wave", "halt", "complete"]


def parse_version(text: str) -> Version:
    """The version in `text` (PEP 440, which reads semantic versions such as 8.1.0);
    ValueError for anything else."""
    try:
        return Version(text)
    except InvalidVersion:
        raise ValueError(f"{text!r} is not a version such as 8.1.0") from None


def order_key(vin: str) -> str:
    """Where a car stands in every rollout's order: a hash of its VIN, so the waves are stable
    (the same cars come first whenever the targets are chosen again) and spread over the
    fleet rather than by production date."""
    return hashlib.sha256(vin.encode()).hexdigest()


def check_waves(waves: Sequence[int]) -> None:
    """ValueError unless the waves are increasing percentages ending at 100."""
    if not waves:
        raise ValueError("give at least one wave")
    if any(not 0 < wave <= 100 for wave in waves):
        raise ValueError("each wave is a percentage of the fleet from 1 to 100")
    if any(later <= earlier for earlier, later in itertools.pairwise(waves)):
        raise ValueError("waves must grow: each is the share of the fleet reached by then")
    if waves[-1] != 100:
        raise ValueError("the last wave must be 100 (the whole compatible fleet)")


def wave_of(rank: int, total: int, waves: Sequence[int]) -> int:
    """The wave (1-based) of the car at `rank` (0-based) among `total` cars: wave k reaches the
    first ceil(waves[k] % of total) cars."""
    for number, percent in enumerate(waves, start=1):
        if rank < math.ceil(total * percent / 100):
            return number
    return len(waves)


@dataclass(frozen=True)
class Compatibility:
    models: frozenset[str]
    hardware: frozenset[str]
    min_version: str | None


def compatible(
    rule: Compatibility, *, model: str, fitted_hardware: Collection[str], running: str
) -> bool:
    """Whether a car of `model`, with that hardware fitted and running `running`, may take
    the release."""
    if model not in rule.models or not rule.hardware <= set(fitted_hardware):
        return False
    if rule.min_version is None:
        return True
    try:
        return parse_version(running) >= parse_version(rule.min_version)
    except ValueError:
        return False


@dataclass(frozen=True)
class WaveProgress:
    number: int
    total: int
    by_state: Mapping[str, int]

    @property
    def succeeded(self) -> int:
        return sum(self.by_state.get(state, 0) for state in SUCCEEDED)

    @property
    def failed(self) -> int:
        return sum(self.by_state.get(state, 0) for state in FAILED)

    @property
    def awaiting(self) -> int:
        return sum(self.by_state.get(state, 0) for state in AWAITING)

    @property
    def success_percent(self) -> float:
        """Of the cars whose owners let them take it (the ones still awaiting their owner's
        answer do not hold the next wave back)."""
        deciding = self.total - self.awaiting
        return 100 * self.succeeded / deciding if deciding else 100.0


def decide(
    waves: Sequence[WaveProgress],
    *,
    current_wave: int,
    success_percent: int,
    failure_percent: int,
) -> Decision:
    """What a running rollout does now, given each wave's cars by state.

    Halt when the cars that failed or rolled back reach more than `failure_percent` of the
    cars offered so far (waves 1 .. `current_wave`); else start the next wave when the current
    one has at least `success_percent` of its cars installed, not counting cars awaiting their
    owner (complete after the last, once no car of it is under way and no car offered so far
    awaits its owner).
    """
    offered = [wave for wave in waves if wave.number <= current_wave]
    total = sum(wave.total for wave in offered)
    failed = sum(wave.failed for wave in offered)
    if total and 100 * failed > failure_percent * total:
        return "halt"
    current = next((wave for wave in waves if wave.number == current_wave), None)
    if current is None:
        return "next_wave"
    if current.success_percent < success_percent:
        return "wait"
    if current_wave < max((wave.number for wave in waves), default=0):
        return "next_wave"
    under_way = sum(current.by_state.get(state, 0) for state in UNDER_WAY)
    awaiting = sum(wave.awaiting for wave in offered)
    return "wait" if under_way or awaiting else "complete"
