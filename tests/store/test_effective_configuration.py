"""Property-based tests of the effective configuration: whatever the entitlements (overlapping,
touching, planned ahead, open-ended, switched off, revoked), the car runs a feature exactly
when a simple reference model says it is entitled to.

The reference: a feature is on at instant t when some entitlement of it is delivering or
active, switched on, and has valid_from <= t < valid_until. Time is counted in whole hours from
`T0`; the car enforces the windows of its newest manifest by its own clock.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from caas.ota.rules import CatalogFeature, feature_states
from caas.protocol.mqtt import FeatureState
from caas.store.rules import (
    COUNTING_STATES,
    EntitlementTerms,
    counting_windows,
    covering_window,
    merge_windows,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)
HORIZON = 160  # hours looked at
CODES = ("power_boost", "winter_traction")
FEATURES = [CatalogFeature(code=code, name=code, category="performance") for code in CODES]
SOURCES = ("plan", "trial", "purchase", "subscription", "permanent", "metered", "occurrence")


def hour(n: int) -> datetime:
    return T0 + timedelta(hours=n)


@st.composite
def entitlement_terms(draw: st.DrawFn, *, code: str | None = None) -> EntitlementTerms:
    # On a grid of 4 hours, so windows often touch (one ends where another starts).
    start = 4 * draw(st.integers(0, 30))
    # 0: a window cut before it started (empty); None: open-ended.
    length = draw(st.one_of(st.none(), st.integers(0, 15).map(lambda n: 4 * n)))
    return EntitlementTerms(
        code=code or draw(st.sampled_from(CODES)),
        source=draw(st.sampled_from(SOURCES)),
        state=draw(st.sampled_from(("delivering", "active", "active", "ended", "revoked"))),
        enabled=draw(st.booleans()),
        valid_from=hour(start),
        valid_until=None if length is None else hour(start + length),
    )


entitlement_lists = st.lists(entitlement_terms(), max_size=8)


def entitled(entitlements: Sequence[EntitlementTerms], code: str, at: datetime) -> bool:
    """The reference model."""
    return any(
        e.code == code
        and e.state in COUNTING_STATES
        and e.enabled
        and e.valid_from <= at
        and (e.valid_until is None or at < e.valid_until)
        for e in entitlements
    )


def manifest(entitlements: Sequence[EntitlementTerms], at: datetime) -> dict[str, FeatureState]:
    """What the platform signs at `at`, by feature."""
    states = feature_states(FEATURES, counting_windows(entitlements), at=at)
    return {state.code: state for state in states}


def car_runs(state: FeatureState, at: datetime) -> bool:
    """What a car that holds this state runs at `at`, by its own clock (offline)."""
    return (
        state.enabled
        and (state.valid_from is None or state.valid_from <= at)
        and (state.valid_until is None or at < state.valid_until)
    )


def boundaries(entitlements: Sequence[EntitlementTerms]) -> list[int]:
    """Every start and end, in hours (the instants the sweep re-signs at)."""
    instants = {0}
    for e in entitlements:
        instants.add(int((e.valid_from - T0) / timedelta(hours=1)))
        if e.valid_until is not None:
            instants.add(int((e.valid_until - T0) / timedelta(hours=1)))
    return sorted(instants)


@settings(max_examples=300, deadline=None)
@given(entitlement_lists, st.integers(0, HORIZON))
def test_the_signed_window_is_exactly_the_entitled_time_until_it_ends(
    entitlements: list[EntitlementTerms], signed_at: int
) -> None:
    """From its signing to the end of the window it carries, a manifest makes the car run each
    feature exactly when the owner is entitled to it; it is off right after (touching windows
    are chained, not cut), and when it carries nothing, nothing is to come."""
    signed = manifest(entitlements, hour(signed_at))
    for code in CODES:
        state = signed[code]
        if not state.enabled:
            assert not any(
                entitled(entitlements, code, hour(t)) for t in range(signed_at, HORIZON + 200)
            )
            continue
        assert state.valid_from is not None
        end = (
            HORIZON + 200
            if state.valid_until is None
            else int((state.valid_until - T0) / timedelta(hours=1))
        )
        for t in range(signed_at, end):
            assert car_runs(state, hour(t)) == entitled(entitlements, code, hour(t)), (code, t)
        if state.valid_until is not None:
            assert not entitled(entitlements, code, state.valid_until)


@settings(max_examples=300, deadline=None)
@given(entitlement_lists)
def test_re_signed_at_every_boundary_the_car_always_runs_what_it_is_entitled_to(
    entitlements: list[EntitlementTerms],
) -> None:
    """The sweep signs a new manifest at every start and end; between two of them the car
    follows the newest one by its own clock, and always agrees with the reference."""
    instants = boundaries(entitlements)
    signed = {instant: manifest(entitlements, hour(instant)) for instant in instants}
    for t in range(0, HORIZON + 70):
        newest = max(instant for instant in instants if instant <= t)
        for code in CODES:
            runs = car_runs(signed[newest][code], hour(t))
            assert runs == entitled(entitlements, code, hour(t)), (code, t, newest)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(10, 60),
    st.lists(st.tuples(st.integers(0, 100), st.integers(1, 40)), max_size=5),
    st.integers(0, HORIZON),
)
def test_a_purchase_never_cuts_the_plan_and_one_bought_at_its_end_extends_it(
    plan_length: int, purchases: list[tuple[int, int]], signed_at: int
) -> None:
    plan = EntitlementTerms("power_boost", "plan", "active", True, hour(0), hour(plan_length))
    # One window bought to start exactly where the plan ends: an extension.
    extension = EntitlementTerms(
        "power_boost", "purchase", "active", True, hour(plan_length), hour(plan_length + 24)
    )
    bought = [
        EntitlementTerms("power_boost", "purchase", "active", True, hour(s), hour(s + n))
        for s, n in purchases
    ]
    entitlements = [plan, extension, *bought]
    if signed_at < plan_length:
        state = manifest(entitlements, hour(signed_at))["power_boost"]
        assert state.enabled
        assert state.valid_from is not None and state.valid_from <= hour(signed_at)
        assert state.valid_until is not None and state.valid_until >= hour(plan_length + 24)
    merged = merge_windows((e.valid_from, e.valid_until) for e in entitlements)
    assert merged[0][0] == hour(0)
    assert merged[0][1] is not None and merged[0][1] >= hour(plan_length + 24)


@settings(max_examples=200, deadline=None)
@given(entitlement_lists, st.data())
def test_switching_an_option_off_leaves_a_gap_and_on_again_restores_it(
    entitlements: list[EntitlementTerms], data: st.DataObject
) -> None:
    if not entitlements:
        return
    index = data.draw(st.integers(0, len(entitlements) - 1))
    at = hour(data.draw(st.integers(0, HORIZON)))
    on = [replace(e, enabled=True) if i == index else e for i, e in enumerate(entitlements)]
    off = [replace(e, enabled=False) if i == index else e for i, e in enumerate(entitlements)]
    switched = entitlements[index]
    # Off: its window counts no more; what other entitlements cover stays on.
    code = switched.code
    for t in range(0, HORIZON + 70):
        others = entitled([e for i, e in enumerate(off) if i != index], code, hour(t))
        assert entitled(off, code, hour(t)) == others
    # Off and on again: the very same configuration as before switching it off.
    assert manifest(on, at) == manifest(
        [replace(e, enabled=True) if i == index else e for i, e in enumerate(off)], at
    )
    without = [e for i, e in enumerate(on) if i != index]
    assert counting_windows(off) == counting_windows(without)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 100), st.one_of(st.none(), st.integers(1, 40))), max_size=8),
    st.integers(0, HORIZON),
)
def test_merged_windows_are_disjoint_cover_the_same_time_and_coverage_ends_at_the_first_gap(
    spans: list[tuple[int, int | None]], at: int
) -> None:
    windows = [(hour(s), None if n is None else hour(s + n)) for s, n in spans]

    def inside(t: datetime, group: list[tuple[datetime, datetime | None]]) -> bool:
        return any(s <= t and (u is None or t < u) for s, u in group)

    merged = merge_windows(windows)
    for (_, end), (next_start, _) in itertools.pairwise(merged):
        assert end is not None and end < next_start  # a real gap between two windows
    for t in range(0, HORIZON + 50):
        assert inside(hour(t), merged) == inside(hour(t), windows)
    covering = covering_window(windows, hour(at))
    if not inside(hour(at), windows):
        assert covering is None
        return
    assert covering is not None
    start, end = covering
    assert start <= hour(at)
    if end is None:
        assert all(inside(hour(t), windows) for t in range(at, HORIZON + 50))
    else:
        steps = int((end - hour(at)) / timedelta(hours=1))
        assert all(inside(hour(at + k), windows) for k in range(steps))
        assert not inside(end, windows)


def test_open_ended_and_closed_windows_of_one_feature_chain_into_one_with_no_end() -> None:
    entitlements = [
        EntitlementTerms("power_boost", "purchase", "active", True, hour(0), hour(10)),
        EntitlementTerms("power_boost", "permanent", "active", True, hour(10), None),
    ]
    state = manifest(entitlements, hour(3))["power_boost"]
    assert (state.enabled, state.valid_from, state.valid_until) == (True, hour(0), None)
