"""The factory simulator's HTTP service: the Factory Order API v1 plus demo and test controls."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from caas.protocol.factory import (
    API_KEY_HEADER,
    API_VERSION,
    IDEMPOTENCY_HEADER,
    CarProvisioned,
    CarProvisioning,
    FactoryError,
    FactoryOrderAck,
    FactoryOrderCreate,
    FactoryOrderRead,
    StageEvent,
)
from caas_sim.factory.delivery import WebhookSender
from caas_sim.factory.floor import (
    FactoryFloor,
    FlashedCar,
    NoMoreStages,
    OrderConflict,
    SimOrder,
    utc_now,
)

log = structlog.get_logger(__name__)

DESCRIPTION = """
A simulated car factory speaking the **Factory Order API v1** (`caas.protocol.factory`).

The platform places orders with `POST /v1/orders` (API key in `X-Api-Key`, the order id as
`Idempotency-Key`); the factory walks each car through its stages (accepted, scheduled, body,
paint, assembly, quality check, shipped, at the dealer) and reports every stage to the
platform as a signed webhook (`X-Caas-Signature`), retrying until the platform answers 2xx.
At `assembly` the car gets its VIN and its Ed25519 key pair.

Routes under `/sim` are **simulator-only** controls for demos and tests; a real factory has
none of them.
"""


class FactoryApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = FactoryError(code=code, message=message)


class Outage(BaseModel):
    down: bool = Field(description="While down, every `/v1` route answers 503")


class Delivery(BaseModel):
    """A stage event the simulator just sent, and how the platform answered."""

    event: StageEvent
    delivered: bool = Field(description="The platform answered 2xx")
    platform_status: int | None = Field(description="HTTP status, or null if it did not answer")


class Pace(BaseModel):
    stage_seconds: float = Field(
        gt=0, le=3600, description="Seconds between two stages of this order from now on"
    )


class CarKey(BaseModel):
    """Simulator only: the key pair generated inside a car at the factory."""

    vin: str
    public_key: str = Field(description="Ed25519, raw 32 bytes, base64")
    private_key: str = Field(description="Ed25519, raw 32 bytes, base64: lives in the car")


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    task = asyncio.create_task(_production_line(app), name="factory-sim-line")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        app.state.floor.save()


async def _production_line(app: FastAPI) -> None:
    """Advance due orders (when auto-advancing) and deliver owed events, forever."""
    floor: FactoryFloor = app.state.floor
    sender: WebhookSender = app.state.sender
    while True:
        try:
            now = utc_now()
            # Without auto-advance only orders given their own pace are ever due.
            for order in floor.due(now):
                with contextlib.suppress(NoMoreStages):
                    floor.advance(
                        order.order.order_id, now=now, auto_advance=app.state.auto_advance
                    )
            for order_id in sender.owing(now):
                await sender.deliver_owed(order_id, now=now)
        except asyncio.CancelledError:
            raise
        except Exception:  # the line must keep running whatever one round hit
            log.exception("factory_sim.round_failed")
        await asyncio.sleep(app.state.tick_seconds)


def create_app(
    *,
    webhook_url: str,
    webhook_secret: str,
    api_key: str,
    stage_seconds: float = 2.0,
    auto_advance: bool = True,
    state_file: Path | None = None,
    retry_base_seconds: float = 1.0,
    retry_max_seconds: float = 60.0,
) -> FastAPI:
    """The factory simulator.

    `webhook_url` is the platform's events endpoint and `webhook_secret` the secret it shares
    with the factory; `api_key` is the key the platform must send. With `auto_advance` every
    order moves one stage each `stage_seconds`; without it, only `/sim/orders/{id}/advance`
    moves orders. `state_file` keeps the orders (and the cars' keys) across restarts.
    """
    app = FastAPI(
        title="caas factory simulator",
        version=API_VERSION,
        description=DESCRIPTION,
        lifespan=_lifespan,
    )
    floor = FactoryFloor(state_file=state_file, stage_seconds=stage_seconds)
    sender = WebhookSender(
        floor=floor,
        webhook_url=webhook_url,
        webhook_secret=webhook_secret,
        retry_base_seconds=retry_base_seconds,
        retry_max_seconds=retry_max_seconds,
    )
    app.state.floor = floor
    app.state.sender = sender
    app.state.auto_advance = auto_advance
    app.state.down = False
    app.state.tick_seconds = min(0.25, max(stage_seconds / 4, 0.01))

    @app.exception_handler(FactoryApiError)
    async def factory_error(_: Request, error: FactoryApiError) -> JSONResponse:
        return JSONResponse(error.body.model_dump(), status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {"loc": ("body",), "msg": "invalid"}
        where = ".".join(str(part) for part in first["loc"] if part != "body") or "body"
        body = FactoryError(code="invalid_request", message=f"{where}: {first['msg']}")
        return JSONResponse(body.model_dump(), status_code=422)

    async def factory_up(request: Request) -> None:
        if request.app.state.down:
            raise FactoryApiError(503, "factory.unavailable", "the factory is down; retry later")

    async def authorised(
        key: Annotated[str | None, Header(alias=API_KEY_HEADER)] = None,
    ) -> None:
        if key is None or not hmac.compare_digest(key.encode(), api_key.encode()):
            raise FactoryApiError(401, "factory.unauthorized", f"send a valid {API_KEY_HEADER}")

    errors: dict[int | str, dict[str, Any]] = {
        status: {"model": FactoryError, "description": description}
        for status, description in {
            401: "Missing or wrong API key",
            404: "No such order",
            409: "The order id was already used for a different order",
            422: "Malformed order",
            503: "The factory is down; retry later with the same order id",
        }.items()
    }
    v1 = APIRouter(
        prefix=f"/{API_VERSION}",
        tags=["Factory Order API v1"],
        dependencies=[Depends(factory_up), Depends(authorised)],
    )

    def _order(order_id: str) -> SimOrder:
        order = floor.get(order_id)
        if order is None:
            raise FactoryApiError(404, "order.not_found", f"no order {order_id}")
        return order

    @v1.post(
        "/orders",
        response_model=FactoryOrderAck,
        status_code=201,
        summary="Place an order for one car (idempotent by order id)",
        responses={200: {"model": FactoryOrderAck, "description": "Already placed"}, **errors},
    )
    async def place_order(
        body: FactoryOrderCreate,
        idempotency_key: Annotated[
            str | None,
            Header(alias=IDEMPOTENCY_HEADER, description="Must equal `order_id` when sent"),
        ] = None,
    ) -> JSONResponse:
        if idempotency_key is not None and idempotency_key != body.order_id:
            raise FactoryApiError(
                422, "idempotency.mismatch", f"{IDEMPOTENCY_HEADER} must equal order_id"
            )
        try:
            order, created = floor.place(body, now=utc_now(), auto_advance=app.state.auto_advance)
        except OrderConflict:
            raise FactoryApiError(
                409, "order.id_reused", f"order {body.order_id} exists with different contents"
            ) from None
        log.info("factory_sim.order", order_id=body.order_id, created=created)
        return JSONResponse(
            order.ack().model_dump(mode="json"), status_code=201 if created else 200
        )

    @v1.get(
        "/orders/{order_id}",
        response_model=FactoryOrderRead,
        summary="An order as the factory sees it",
        responses=errors,
    )
    async def read_order(order_id: str) -> FactoryOrderRead:
        return _order(order_id).read()

    @v1.put(
        "/cars/{vin}/provisioning",
        response_model=CarProvisioned,
        summary="Flash the platform's provisioning bundle into a car built here",
        responses=errors,
    )
    async def provision_car(vin: str, body: CarProvisioning) -> CarProvisioned:
        if body.vin != vin:
            raise FactoryApiError(422, "provisioning.vin_mismatch", "the bundle is for another car")
        if not floor.flash(body):
            raise FactoryApiError(404, "car.not_found", f"no car {vin} was built here")
        log.info("factory_sim.car_provisioned", vin=vin)
        return CarProvisioned(vin=vin, flashed=True)

    app.include_router(v1)

    sim = APIRouter(prefix="/sim", tags=["simulator only"])

    @sim.get("/orders", response_model=list[FactoryOrderRead], summary="Every order held")
    async def list_orders() -> list[FactoryOrderRead]:
        return [order.read() for order in floor.orders()]

    @sim.post(
        "/orders/{order_id}/advance",
        response_model=Delivery,
        summary="Move the order to its next stage now and send that event synchronously",
        responses={404: {"model": FactoryError}, 409: {"model": FactoryError}},
    )
    async def advance(order_id: str) -> Delivery:
        _order(order_id)
        now = utc_now()
        try:
            owed = floor.advance(order_id, now=now, auto_advance=app.state.auto_advance)
        except NoMoreStages:
            raise FactoryApiError(409, "order.finished", "the car is at the dealer") from None
        await sender.deliver_owed(order_id, now=now, force=True)
        return Delivery(
            event=owed.event, delivered=owed.delivered, platform_status=owed.last_status
        )

    @sim.post(
        "/orders/{order_id}/pace",
        response_model=FactoryOrderRead,
        summary="Build this order at its own pace (a demo's express car), auto-advanced",
        responses={404: {"model": FactoryError}},
    )
    async def pace(order_id: str, body: Pace) -> FactoryOrderRead:
        _order(order_id)
        order = floor.pace(order_id, body.stage_seconds, now=utc_now())
        app.state.tick_seconds = min(app.state.tick_seconds, max(body.stage_seconds / 4, 0.01))
        log.info("factory_sim.order_paced", order_id=order_id, stage_seconds=body.stage_seconds)
        return order.read()

    @sim.post(
        "/replay/{order_id}",
        response_model=Delivery,
        summary="Send the order's last event again (same event id and sequence)",
        responses={404: {"model": FactoryError}, 409: {"model": FactoryError}},
    )
    async def replay(order_id: str) -> Delivery:
        order = _order(order_id)
        if not order.events:
            raise FactoryApiError(409, "order.no_events", "no event sent yet")
        owed = order.events[-1]
        status = await sender.resend(owed)
        return Delivery(
            event=owed.event,
            delivered=status is not None and 200 <= status < 300,
            platform_status=status,
        )

    @sim.post("/outage", response_model=Outage, summary="Take the factory's API down or up")
    async def outage(body: Outage) -> Outage:
        app.state.down = body.down
        log.info("factory_sim.outage", down=body.down)
        return body

    @sim.get(
        "/cars/{vin}/private-key",
        response_model=CarKey,
        summary="SIMULATOR ONLY: the key pair pinned in a car (for the vehicle simulator)",
        responses={404: {"model": FactoryError}},
    )
    async def car_key(vin: str) -> CarKey:
        car = floor.car(vin)
        if car is None:
            raise FactoryApiError(404, "car.not_found", f"no car {vin} was built here")
        return CarKey(vin=car.vin, public_key=car.public_key, private_key=car.private_key)

    @sim.get(
        "/cars/{vin}",
        response_model=FlashedCar,
        summary="SIMULATOR ONLY: everything flashed into a car (for the vehicle simulator)",
        responses={404: {"model": FactoryError}},
    )
    async def flashed_car(vin: str) -> FlashedCar:
        car = floor.car(vin)
        if car is None:
            raise FactoryApiError(404, "car.not_found", f"no car {vin} was built here")
        return FlashedCar(
            vin=car.vin,
            public_key=car.public_key,
            private_key=car.private_key,
            provisioning=car.provisioning,
        )

    app.include_router(sim)
    return app
