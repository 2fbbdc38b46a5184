"""The catalog's rules that need no database: languages, categories, software versions and
the requirements between a platform's features."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

# Languages a feature's name and description may be written in (the platform's six).
Language = Literal["es", "en", "fr", "de", "it", "pt"]
LANGUAGES: Final[tuple[Language, ...]] = ("es", "en", "fr", "de", "it", "pt")
# English is the fallback every reader can get: a feature always has an English name.
REQUIRED_LANGUAGE: Final = "en"

Category = Literal["performance", "safety", "autonomy", "traction", "comfort", "entertainment"]
CATEGORIES: Final[tuple[Category, ...]] = (
    "performance",
    "safety",
    "autonomy",
    "traction",
    "comfort",
    "entertainment",
)

# "7.3", "7.3.0": dotted numbers, what cars report (`caas.ota.rules.software_at_least`).
SOFTWARE_VERSION: Final = r"^[0-9]{1,4}(\.[0-9]{1,4}){1,2}$"
FEATURE_CODE: Final = r"^[a-z][a-z0-9_]{1,39}$"
_SOFTWARE_VERSION = re.compile(SOFTWARE_VERSION)


def is_software_version(value: str) -> bool:
    return _SOFTWARE_VERSION.match(value) is not None


@dataclass(frozen=True)
class Problem:
    """Why a feature's requirements are refused: the field at fault, a stable code, a reason."""

    field: str
    code: str
    reason: str


def requirement_problem(
    code: str,
    *,
    requires: Sequence[str],
    conflicts: Sequence[str],
    platform: Mapping[str, tuple[Sequence[str], Sequence[str]]],
) -> Problem | None:
    """The first thing wrong with feature `code` requiring `requires` and conflicting with
    `conflicts`, given the other features of its platform (`platform[code] = (requires,
    conflicts)`, this feature's old entry ignored); None when all is well.

    Refused: a code the platform does not have, the feature itself, a code both required and
    conflicting, requiring a feature that conflicts with this one, and a cycle of requirements
    (A needs B needs A: neither could ever be bought).
    """
    others = {other: links for other, links in platform.items() if other != code}
    for name, codes in (("requires", requires), ("conflicts", conflicts)):
        for index, other in enumerate(codes):
            if other == code:
                return Problem(
                    f"{name}.{index}", "feature.refers_to_itself", f"{code} cannot name itself"
                )
            if other not in others:
                return Problem(
                    f"{name}.{index}",
                    "feature.unknown_code",
                    f"the platform has no feature {other!r}",
                )
    for index, other in enumerate(conflicts):
        if other in requires:
            return Problem(
                f"conflicts.{index}",
                "feature.requires_and_conflicts",
                f"{code} cannot both require and conflict with {other}",
            )
    for index, other in enumerate(requires):
        if code in others[other][1]:
            return Problem(
                f"requires.{index}",
                "feature.requires_a_conflict",
                f"{code} requires {other}, which conflicts with {code}",
            )
    for index, other in enumerate(conflicts):
        if code in others[other][0]:
            return Problem(
                f"conflicts.{index}",
                "feature.requires_a_conflict",
                f"{other} requires {code}: they cannot conflict",
            )
    cycle = requirement_cycle(code, requires, {k: v[0] for k, v in others.items()})
    if cycle:
        return Problem(
            "requires",
            "feature.requirement_cycle",
            f"these requirements go round in a circle: {' -> '.join(cycle)}",
        )
    return None


def requirement_cycle(
    code: str, requires: Sequence[str], graph: Mapping[str, Sequence[str]]
) -> list[str]:
    """A path `code -> ... -> code` through `requires` then the other features' requirements
    (`graph`), or [] when there is none."""
    stack: list[tuple[str, list[str]]] = [(other, [code, other]) for other in requires]
    seen: set[str] = set()
    while stack:
        current, path = stack.pop()
        if current == code:
            return path
        if current in seen:
            continue
        seen.add(current)
        for following in graph.get(current, ()):
            stack.append((following, [*path, following]))
    return []
