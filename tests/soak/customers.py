"""Simulated customers: each one, in a thread of its own, uses the platform's HTTP API as a
person with a phone would, until the soak's end.

What a customer does, chosen at random each time (`ACTIONS`): buy a window of an option (a day
or a week), subscribe to one monthly, take a free trial, cancel or resume a subscription,
switch an option off or on, or look at their purchases. Every command carries a fresh
Idempotency-Key; some are sent again with the same key after the answer (a retry after a lost
answer), some twice at the same moment from two sessions (a double tap). Both answers must be
the same: `Tally.errors` counts `idempotency.*` otherwise.

Every answer is counted in `Tally.ops` by action and status; what no correct platform answers
(a 5xx, a broken connection, two answers for one key) goes to `Tally.errors` by kind, with a
few examples kept for the report. Refusals the API documents (402 declined card, 409 not
eligible...) are ordinary outcomes, not errors.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from caas.protocol.payments import CARD_DECLINED, CARD_SUCCEEDS
from caas.seed import DEMO_PASSWORD
from tests.soak.world import Customer

# Window offers a customer buys: short ones, so that they end while the soak runs.
WINDOWS = ("1D", "7D")
# Share of commands sent again with the same key after the answer, and twice at once.
RETRY_SHARE = 0.15
DOUBLE_TAP_SHARE = 0.15
# Share of purchases paid with a card that the provider declines.
DECLINED_SHARE = 0.08
# A customer waits this long (seconds, at random between the two) between two actions.
THINK = (0.2, 1.0)
# How often a 202 (the provider has not confirmed) is asked about again with the same key.
PENDING_RETRIES = 10
# Answers the API documents for a command that may not be done now.
REFUSALS = {402, 404, 409}
EXAMPLES_PER_KIND = 3


@dataclass
class Tally:
    """What the customers did and what went wrong, shared by their threads."""

    ops: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    purchases: set[int] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def op(self, action: str, outcome: str | int) -> None:
        with self._lock:
            self.ops[f"{action} {outcome}"] += 1

    def error(self, kind: str, example: str) -> None:
        with self._lock:
            self.errors[kind] += 1
            kept = self.examples.setdefault(kind, [])
            if len(kept) < EXAMPLES_PER_KIND:
                kept.append(example[:400])

    def purchase(self, purchase_id: int) -> None:
        with self._lock:
            self.purchases.add(purchase_id)


class Shopper:
    """One customer's sessions (two, for double taps), cards and car."""

    def __init__(
        self,
        customer: Customer,
        *,
        platform_url: str,
        payments_url: str,
        tally: Tally,
        seed: int,
    ) -> None:
        self.customer = customer
        self.vin = customer.car.vin
        self.tally = tally
        self.random = random.Random(seed)
        self.payments_url = payments_url
        # An idle connection is dropped by the client after 2 s, before uvicorn closes it after
        # its 5 s keep-alive: with both at 5 s a request could go out on a connection the server
        # was closing at that moment, and come back as a connection reset (seen once in 1,707).
        limits = httpx.Limits(keepalive_expiry=2.0)
        self.sessions = [
            httpx.Client(base_url=platform_url, timeout=60, limits=limits) for _ in range(2)
        ]
        self.card = ""
        self.declined_card = ""

    def close(self) -> None:
        for session in self.sessions:
            session.close()

    # --- set-up -------------------------------------------------------------------------------

    def log_in(self) -> None:
        for session in self.sessions:
            answer = session.post(
                "/api/v1/auth/login",
                json={"email": self.customer.email, "password": DEMO_PASSWORD},
            )
            assert answer.status_code == 200, answer.text
        self.card = self._tokenise(CARD_SUCCEEDS)
        self.declined_card = self._tokenise(CARD_DECLINED)

    def _tokenise(self, number: str) -> str:
        """A card token, made as the customer's browser does: straight at the provider."""
        answer = httpx.post(
            f"{self.payments_url}/v1/tokens",
            json={"number": number, "exp_month": 12, "exp_year": 2040, "cvc": "123"},
        )
        assert answer.status_code == 201, answer.text
        token: str = answer.json()["id"]
        return token

    # --- the loop -----------------------------------------------------------------------------

    def run(self, until: float, stop: threading.Event) -> None:
        """Act until `until` (time.monotonic) or `stop`."""
        actions = list(ACTIONS)
        weights = [weight for _, weight in ACTIONS.values()]
        while time.monotonic() < until and not stop.is_set():
            name = self.random.choices(actions, weights)[0]
            act = ACTIONS[name][0]
            try:
                act(self)
            except httpx.HTTPError as error:
                self.tally.error(f"transport.{type(error).__name__}", f"{name}: {error!r}")
            stop.wait(self.random.uniform(*THINK))

    # --- what the customer does ---------------------------------------------------------------

    def buy_window(self) -> None:
        self._buy(
            "buy_window", lambda offer: offer["kind"] == "window" and offer["duration"] in WINDOWS
        )

    def subscribe(self) -> None:
        self._buy(
            "subscribe", lambda offer: offer["kind"] == "subscription" and offer["duration"] == "1M"
        )

    def trial(self) -> None:
        self._buy("trial", lambda offer: offer["kind"] == "trial")

    def _buy(self, action: str, wanted: Callable[[dict[str, Any]], bool]) -> None:
        store = self._read(action, f"/api/v1/vehicles/{self.vin}/store")
        if store is None:
            return
        offers = [
            offer
            for feature in store["features"]
            if not feature["refusals"]
            for offer in feature["offers"]
            if wanted(offer)
        ]
        if not offers:
            self.tally.op(action, "nothing_to_buy")
            return
        offer = self.random.choice(offers)
        declined = self.random.random() < DECLINED_SHARE
        body = {
            "items": [{"offer_id": offer["id"]}],
            "payment_method": self.declined_card if declined else self.card,
        }
        answers = self._command(action, "POST", f"/api/v1/vehicles/{self.vin}/purchases", body)
        ids = {self._purchase_id(answer) for answer in answers} - {None}
        for purchase_id in ids:
            assert purchase_id is not None
            self.tally.purchase(purchase_id)
        if len(ids) > 1:
            self.tally.error("idempotency.two_purchases", f"{action}: one key, purchases {ids}")
        paid = offer["kind"] != "trial"
        if paid and declined and any(answer.status_code in (201, 202) for answer in answers):
            self.tally.error("payment.declined_card_accepted", f"{action}: {answers[0].text}")

    @staticmethod
    def _purchase_id(answer: httpx.Response) -> int | None:
        if answer.status_code in (201, 202):
            return int(answer.json()["id"])
        if answer.status_code == 402:
            purchase = answer.json().get("details", {}).get("purchase")
            return int(purchase["id"]) if purchase else None
        return None

    def cancel_or_resume(self) -> None:
        action = "cancel_or_resume"
        found = self._read(action, f"/api/v1/vehicles/{self.vin}/subscriptions")
        if found is None:
            return
        live = [s for s in found if s["state"] in ("active", "past_due")]
        if not live:
            self.tally.op(action, "nothing_to_change")
            return
        subscription = self.random.choice(live)
        verb = "resume" if subscription["cancel_at_period_end"] else "cancel"
        self._command(
            f"{verb}_subscription", "POST", f"/api/v1/subscriptions/{subscription['id']}/{verb}", {}
        )

    def switch_option(self) -> None:
        action = "switch_option"
        found = self._read(action, f"/api/v1/vehicles/{self.vin}/options")
        if found is None:
            return
        switchable = [o for o in found if o["state"] == "active" and o["source"] != "trial"]
        if not switchable:
            self.tally.op(action, "nothing_to_switch")
            return
        option = self.random.choice(switchable)
        self._command(
            action,
            "PUT",
            f"/api/v1/vehicles/{self.vin}/options/{option['entitlement_id']}",
            {"enabled": not option["enabled"]},
        )

    def look(self) -> None:
        self._read("look", f"/api/v1/vehicles/{self.vin}/purchases")

    # --- talking to the API -------------------------------------------------------------------

    def _read(self, action: str, path: str) -> Any:
        answer = self.sessions[0].get(path)
        self.tally.op(f"{action}.read", answer.status_code)
        if answer.status_code != 200:
            self._unexpected(action, answer)
            return None
        return answer.json()

    def _command(
        self, action: str, method: str, path: str, body: dict[str, Any]
    ) -> list[httpx.Response]:
        """Send one command under a new key: once, once and again after the answer, or twice
        at the same moment (a double tap); a 202 is asked about again with the same key. Every
        answer for one key must be the same; all of them are returned."""
        key = f"soak-{uuid.uuid4().hex}"
        roll = self.random.random()
        if roll < DOUBLE_TAP_SHARE:
            answers = self._double_tap(method, path, body, key)
            style = "double_tap"
        else:
            answers = [self._send(self.sessions[0], method, path, body, key)]
            style = "once"
            if roll < DOUBLE_TAP_SHARE + RETRY_SHARE:
                answers.append(self._send(self.sessions[0], method, path, body, key))
                style = "retried"
        for answer in answers:
            self.tally.op(f"{action}.{style}", answer.status_code)
            self._unexpected(action, answer)
        self._same_answers(action, answers, concurrent=style == "double_tap")
        return answers

    def _send(
        self, session: httpx.Client, method: str, path: str, body: dict[str, Any], key: str
    ) -> httpx.Response:
        headers = {"Idempotency-Key": key}
        answer = session.request(method, path, json=body, headers=headers)
        for _ in range(PENDING_RETRIES):
            if answer.status_code != 202:
                break
            time.sleep(0.2)
            answer = session.request(method, path, json=body, headers=headers)
        return answer

    def _double_tap(
        self, method: str, path: str, body: dict[str, Any], key: str
    ) -> list[httpx.Response]:
        """The same command from both sessions at the same moment."""
        start = threading.Barrier(2)
        answers: list[httpx.Response | BaseException] = [RuntimeError("no answer")] * 2

        def tap(index: int) -> None:
            start.wait()
            try:
                answers[index] = self._send(self.sessions[index], method, path, body, key)
            except httpx.HTTPError as error:
                answers[index] = error

        other = threading.Thread(target=tap, args=(1,))
        other.start()
        tap(0)
        other.join()
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
        return [a for a in answers if isinstance(a, httpx.Response)]

    def _unexpected(self, action: str, answer: httpx.Response) -> None:
        status = answer.status_code
        if status >= 300 and (status >= 500 or status not in REFUSALS):
            self.tally.error(f"http.{status}", f"{action}: {answer.text}")

    def _same_answers(
        self, action: str, answers: list[httpx.Response], *, concurrent: bool
    ) -> None:
        """Answers to one key: the same status and the same object (by id when there is one).

        One exception: a refusal that wrote nothing (409, 404) is not kept with the key, so a
        retry sent after its cause went away (a subscription ended meanwhile) may act. That
        is one effect, not two; it is counted (`.refused_then_done`), not an error."""
        if len(answers) < 2:
            return
        first, second = answers
        if first.status_code != second.status_code:
            if not concurrent and first.status_code in (404, 409) and second.status_code < 300:
                self.tally.op(action, "refused_then_done")
                return
            self.tally.error(
                "idempotency.different_status",
                f"{action}: {first.status_code} {first.text} / {second.status_code} {second.text}",
            )
            return
        if first.status_code >= 300:
            return
        one, other = first.json(), second.json()
        same = (
            one.get("id") == other.get("id")
            if "id" in one
            else one.get("entitlement_id") == other.get("entitlement_id")
            and one.get("enabled") == other.get("enabled")
        )
        if not same:
            self.tally.error("idempotency.different_answer", f"{action}: {one} / {other}")


# What a customer may do, with how often (relative weights).
ACTIONS: dict[str, tuple[Callable[[Shopper], None], int]] = {
    "buy_window": (Shopper.buy_window, 30),
    "subscribe": (Shopper.subscribe, 10),
    "trial": (Shopper.trial, 5),
    "cancel_or_resume": (Shopper.cancel_or_resume, 10),
    "switch_option": (Shopper.switch_option, 25),
    "look": (Shopper.look, 20),
}
