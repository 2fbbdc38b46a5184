"""A state machine written down once as a table of allowed transitions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from caas.core.errors import Conflict


class StateMachine:
    def __init__(self, name: str, transitions: Mapping[str, Iterable[str]]) -> None:
        self.name = name
        self.transitions = {state: frozenset(targets) for state, targets in transitions.items()}
        self.states = frozenset(self.transitions) | frozenset(
            t for targets in self.transitions.values() for t in targets
        )

    def allows(self, current: str, target: str) -> bool:
        return target in self.transitions.get(current, frozenset())

    def check(self, current: str, target: str) -> None:
        if not self.allows(current, target):
            raise Conflict(
                f"{self.name} cannot go from {current!r} to {target!r}",
                code=f"{self.name}.invalid_transition",
                current=current,
                target=target,
            )
