"""The cars' own screens, and their local key endpoint standing in for Bluetooth.

Each car's page shows what the CAR has applied, not what the platform believes: its options on
or off with their end dates, the paired phones, the messages of its configuration, whether it is
online, and the configuration version. `POST /cars/{vin}/key/challenge` and
`POST /cars/{vin}/key/operate` are the phone talking to the car directly: they work with the car
offline.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Path
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from jinja2 import Environment, select_autoescape
from pydantic import BaseModel, Field

from caas_sim.vehicle import wear
from caas_sim.vehicle.agent import FeatureOnCar, KeyAction, KeyRefusal, VehicleAgent
from caas_sim.vehicle.fleet import TELEMETRY_SECONDS, Fleet
from caas_sim.vehicle.wear import NEEDS, Need

REFRESH_SECONDS = 2
LEVEL_NAMES = {
    wear.DISTANCE_TO_SERVICE: "Service due in (km)",
    wear.TIME_TO_SERVICE: "Service due in (s)",
    wear.WASHER_FLUID: "Washer fluid (%)",
    wear.ADBLUE: "AdBlue (%)",
    wear.TYRE_TREAD: "Tyre tread (mm)",
    wear.BRAKE_PAD_WEAR: "Brake pad wear (%)",
    wear.BATTERY_12V_HEALTH: "12 V battery health (%)",
}

_REFUSALS: dict[KeyRefusal, str] = {
    "not_paired": "No phone is paired with this car yet: it cannot be operated.",
    "key_not_authorised": "This phone is not (or no longer) a key of this car.",
    "no_challenge": "Ask the car for a new challenge and sign it.",
    "bad_signature": "The signature does not match this phone's key.",
}


# --- what the screen shows ------------------------------------------------------------------


class FeatureShown(BaseModel):
    code: str = Field(examples=["winter_traction"])
    name: str = Field(examples=["Winter traction"])
    on: bool
    valid_from: datetime | None
    valid_until: datetime | None
    affects_driving: bool
    waiting_for_park: bool = Field(
        description="Switches on or off as soon as the car is parked (it affects driving)"
    )


class CarScreen(BaseModel):
    """What the car itself runs, as its screen shows it."""

    vin: str
    model: str | None
    online: bool
    config_version: int = Field(description="The configuration applied; 0 before the first")
    pending_version: int | None = Field(description="Verified, waiting for the car to be parked")
    features: list[FeatureShown]
    phones: list[str] = Field(description="Labels of the paired phones", examples=[["Lucía"]])
    messages: list[str] = Field(
        examples=[["Winter traction active until 28 February", "Service due in 500 km"]]
    )
    parked: bool
    speed_kmh: float
    odometer_km: float
    software_version: str
    hardware: list[str]
    locked: bool
    started: bool
    last_report: str | None = Field(
        description="The car's last answer to the platform", examples=["applied version 3"]
    )
    software_update: str | None = Field(
        default=None,
        description="The latest software update: version, step and error",
        examples=["8.1.0 installing"],
    )
    levels: dict[str, float] = Field(
        default_factory=dict,
        description="What the car's sensors read of its fluids, wear and service due, by "
        "signal name (`caas_sim.vehicle.wear`)",
        examples=[{"Vehicle.Body.Windshield.Front.WasherFluid.Level": 42.5}],
    )
    pace: float = Field(default=1.0, description="How much faster than its clock the car lives")


class DriveControl(BaseModel):
    """Make the simulated car drive by itself (a tool for tests and the demo)."""

    speed_kmh: float = Field(ge=0, le=300, description="0 parks the car", examples=[120])
    pace: float = Field(
        default=1.0,
        ge=1,
        le=1_000_000,
        description="Its distance, wear and ageing go this many times faster than its clock",
        examples=[2000],
    )


class ServiceDone(BaseModel):
    """What a workshop did on the car: those levels are new or full again."""

    needs: list[Need] = Field(
        default_factory=lambda: list(NEEDS),
        description="The needs done; all when left out",
        examples=[["washer_fluid"]],
    )


class SoftwareKnobs(BaseModel):
    """How the simulated car's software installs go (a tool for tests and the demo)."""

    install_failure_rate: float = Field(
        ge=0, le=1, description="Share of installs that fail and roll back", examples=[0.5]
    )
    install_seconds: float | None = Field(
        default=None, ge=0, le=600, description="How long an install takes", examples=[3]
    )


def _feature_name(code: str) -> str:
    return code.replace("_", " ").capitalize()


def _day(moment: datetime, today: datetime) -> str:
    text = f"{moment.day} {moment:%B}"
    return text if moment.year == today.year else f"{text} {moment.year}"


def _feature_message(feature: FeatureOnCar, today: datetime) -> str | None:
    name, state = _feature_name(feature.code), feature.state
    if feature.waiting_for_park:
        change = "off" if feature.on else "on"
        return f"{name} switches {change} when the car is parked"
    if feature.on and state.valid_until is not None:
        return f"{name} active until {_day(state.valid_until, today)}"
    if not feature.on and state.enabled and state.valid_from and state.valid_from > today:
        return f"{name} starts on {_day(state.valid_from, today)}"
    return None


def car_screen(agent: VehicleAgent, now: datetime) -> CarScreen:
    """The screen of `agent` at `now` (its own clock)."""
    features = agent.features()
    messages = [m for f in features if (m := _feature_message(f, now)) is not None]
    if agent.pending_version is not None:
        messages.append(
            f"Update {agent.pending_version} changes how the car drives: "
            "it is applied when the car is parked"
        )
    messages += agent.messages
    if not agent.phone_keys:
        messages.append("No phone paired: the car cannot be started yet")
    report = agent.last_report
    return CarScreen(
        vin=agent.vin,
        model=agent.model,
        online=agent.online,
        config_version=agent.version,
        pending_version=agent.pending_version,
        features=[
            FeatureShown(
                code=f.code,
                name=_feature_name(f.code),
                on=f.on,
                valid_from=f.state.valid_from,
                valid_until=f.state.valid_until,
                affects_driving=f.state.affects_driving,
                waiting_for_park=f.waiting_for_park,
            )
            for f in features
        ],
        phones=[key.label for key in agent.phone_keys],
        messages=messages,
        parked=agent.parked,
        speed_kmh=agent.speed_kmh,
        odometer_km=round(agent.odometer_km, 1),
        software_version=agent.software_version,
        hardware=list(agent.hardware),
        locked=agent.locked,
        started=agent.started,
        levels=agent.consumables.readings(diesel=agent.diesel),
        pace=agent.pace,
        last_report=(
            f"{report.status} version {report.version}"
            + (f" ({report.reason})" if report.reason else "")
            if report is not None
            else None
        ),
        software_update=(
            f"{agent.update_version} {agent.update_step}"
            + (f" ({agent.update_error})" if agent.update_error else "")
            if agent.update_step is not None
            else None
        ),
    )


# --- the key endpoint -----------------------------------------------------------------------


class KeyChallengeRead(BaseModel):
    vin: str
    nonce: str = Field(description="Sign its ASCII bytes with the phone's key")
    expires_at: datetime


class KeyOperation(BaseModel):
    action: KeyAction = Field(examples=["unlock"])
    key_id: str = Field(min_length=1, max_length=64, examples=["pk-1"])
    signature: str = Field(
        min_length=1,
        max_length=200,
        description="Base64 (standard or URL-safe) of the signature of the nonce: ECDSA P-256 "
        "SHA-256 as WebCrypto gives it (r || s, 64 bytes), or Ed25519",
    )
    nonce: str | None = Field(
        default=None, max_length=100, description="The challenge signed; default: any open one"
    )


class KeyResult(BaseModel):
    vin: str
    action: KeyAction
    granted: bool
    reason: KeyRefusal | None = None
    message: str | None = None
    locked: bool
    started: bool


# --- the pages ------------------------------------------------------------------------------

_pages = Environment(autoescape=select_autoescape(default_for_string=True))

_STYLE = """
*{box-sizing:border-box}body{margin:0;background:#05070a;color:#e9eef4;
font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;font-size:22px}
a{color:#7cc4ff}.screen{max-width:1000px;margin:24px auto;padding:32px 40px;border-radius:32px;
background:linear-gradient(160deg,#121922,#0a0e13);box-shadow:0 0 0 10px #1b222b,0 20px 60px #000}
.top{display:flex;justify-content:space-between;align-items:center;color:#8b98a8;font-size:18px}
.dot{display:inline-block;width:14px;height:14px;border-radius:50%;margin-right:8px}
.online{background:#35d07f}.offline{background:#ff5f56}
.speed{font-size:96px;font-weight:200;margin:16px 0 0}.speed small{font-size:28px;color:#8b98a8}
.state{color:#8b98a8;margin-bottom:24px}h2{font-size:18px;letter-spacing:.12em;
text-transform:uppercase;color:#8b98a8;font-weight:600;margin:28px 0 8px}
.row{display:flex;justify-content:space-between;align-items:center;padding:14px 0;
border-bottom:1px solid #1e2630}.until{color:#8b98a8;font-size:18px}
.on{color:#35d07f;font-weight:600}.off{color:#5f6b7a;font-weight:600}.wait{color:#ffb547}
.msg{background:#16202b;border-left:6px solid #3b9cff;padding:14px 18px;margin:10px 0;
border-radius:10px}.muted{color:#5f6b7a}ul.cars{list-style:none;padding:0}
"""

_CAR = _pages.from_string(
    """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<meta http-equiv="refresh" content="{{ refresh }}"><title>{{ s.vin }}</title>
<style>{{ style }}</style></head><body><main class="screen">
<div class="top"><span><span class="dot {{ 'online' if s.online else 'offline' }}"></span>
{{ 'Online' if s.online else 'Offline' }}</span><span>{{ s.model or 'caas' }} · {{ s.vin }}</span>
<span>Configuration version {{ s.config_version }}</span></div>
<div class="speed">{{ s.speed_kmh|round|int }} <small>km/h</small></div>
<div class="state">{{ 'Parked' if s.parked else 'Driving' }} · {{ 'Locked' if s.locked else
'Unlocked' }}{% if s.started %} · Ready to drive{% endif %} · {{ s.odometer_km }} km ·
software {{ s.software_version }}{% if s.software_update %} · update
{{ s.software_update }}{% endif %}</div>
{% if s.messages %}<h2>Messages</h2>{% for m in s.messages %}<div class="msg">{{ m }}</div>
{% endfor %}{% endif %}
<h2>Options</h2>{% for f in s.features %}<div class="row"><span>{{ f.name }}
{% if f.valid_until %}<span class="until"> · until {{ f.valid_until.strftime('%d %b %Y %H:%M') }}
</span>{% elif f.valid_from and not f.on %}<span class="until"> · from
{{ f.valid_from.strftime('%d %b %Y %H:%M') }}</span>{% endif %}</span>
<span class="{{ 'wait' if f.waiting_for_park else ('on' if f.on else
'off') }}">{{ 'On' if f.on else 'Off' }}{% if f.waiting_for_park %} (waiting to be parked)
{% endif %}</span></div>{% else %}<p class="muted">Base platform: no options.</p>{% endfor %}
{% if s.levels %}<h2>Levels</h2>{% for signal, value in s.levels.items() %}<div class="row">
<span>{{ level_names.get(signal, signal) }}</span><span>{{ value }}</span></div>{% endfor %}
{% endif %}<h2>Phone keys</h2>{% for p in s.phones %}<div class="row"><span>{{ p }}</span>
<span class="on">Paired</span></div>{% else %}<p class="muted">No phone paired.</p>{% endfor %}
{% if s.last_report %}<p class="muted">Last answer to the platform: {{ s.last_report }}</p>
{% endif %}</main></body></html>"""
)

_FLEET = _pages.from_string(
    """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{{ refresh }}"><title>Cars ({{ cars|length }})</title>
<style>{{ style }}</style></head><body><main class="screen">
<div class="top"><span>{{ online }} of {{ cars|length }} cars online</span></div>
<h2>Cars</h2><ul class="cars">{% for c in cars %}<li class="row">
<a href="/cars/{{ c.vin }}">{{ c.vin }}</a><span>{{ c.model or '' }}</span>
<span>version {{ c.version }}</span><span><span class="dot {{ 'online' if c.online else
'offline' }}"></span>{{ 'Online' if c.online else 'Offline' }}</span></li>
{% endfor %}</ul></main></body></html>"""
)

VinPath = Annotated[str, Path(min_length=17, max_length=17, examples=["VCAAURA02TM000001"])]


def create_app(
    cars: Fleet | VehicleAgent,
    *,
    run_fleet: bool = False,
    telemetry_seconds: float = TELEMETRY_SECONDS,
) -> FastAPI:
    """The screens of `cars` (a fleet, or one car) and their key endpoints.

    With `run_fleet`, the app's lifespan also connects the fleet, keeps it running
    (`Fleet.run`, telemetry every `telemetry_seconds`) and stops it (each car says it is
    offline) when the app stops.
    """
    fleet = cars if isinstance(cars, Fleet) else Fleet([cars])

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if not run_fleet:
            yield
            return
        await fleet.start()
        running = asyncio.create_task(fleet.run(telemetry_seconds=telemetry_seconds))
        try:
            yield
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
            await fleet.stop()

    app = FastAPI(
        title="caas car screens",
        description="What each simulated car has applied, and its local digital-key endpoint "
        "(standing in for Bluetooth between the phone and the car).",
        lifespan=lifespan,
    )
    app.add_middleware(
        CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "POST"], allow_headers=["*"]
    )

    def find(vin: str) -> VehicleAgent:
        if vin not in fleet:
            raise HTTPException(status_code=404, detail=f"no car {vin} here")
        return fleet.agent(vin)

    def screen_of(agent: VehicleAgent) -> CarScreen:
        return car_screen(agent, agent.now())

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/cars")

    @app.get("/cars", response_class=HTMLResponse, summary="The fleet, with links to each screen")
    def fleet_page() -> str:
        rows = [
            {"vin": a.vin, "model": a.model, "version": a.version, "online": a.online}
            for a in fleet
        ]
        return _FLEET.render(
            cars=rows, online=fleet.online_count, refresh=REFRESH_SECONDS, style=_STYLE
        )

    @app.get("/cars/{vin}", response_class=HTMLResponse, summary="The car's screen")
    def car_page(vin: VinPath) -> str:
        return _CAR.render(
            s=screen_of(find(vin)), refresh=REFRESH_SECONDS, style=_STYLE, level_names=LEVEL_NAMES
        )

    @app.get("/api/cars", response_model=list[CarScreen], summary="Every car's screen, as JSON")
    def list_screens() -> list[CarScreen]:
        return [screen_of(agent) for agent in fleet]

    @app.get("/api/cars/{vin}", response_model=CarScreen, summary="The car's screen, as JSON")
    def get_screen(vin: VinPath) -> CarScreen:
        return screen_of(find(vin))

    @app.post(
        "/sim/cars/{vin}/software",
        response_model=CarScreen,
        summary="Make the car's software installs fail (a share of them) or take longer",
    )
    def software_knobs(vin: VinPath, knobs: SoftwareKnobs) -> CarScreen:
        agent = find(vin)
        agent.install_failure_rate = knobs.install_failure_rate
        if knobs.install_seconds is not None:
            agent.install_seconds = knobs.install_seconds
        return screen_of(agent)

    @app.post(
        "/sim/cars/{vin}/drive",
        response_model=CarScreen,
        summary="Make the car drive by itself at a speed, its life going faster than its clock",
    )
    def drive(vin: VinPath, control: DriveControl) -> CarScreen:
        agent = find(vin)
        agent.cruise(control.speed_kmh, pace=control.pace)
        return screen_of(agent)

    @app.post(
        "/sim/cars/{vin}/serviced",
        response_model=CarScreen,
        summary="A workshop did these needs on the car: its sensors read them new or full",
    )
    def serviced(vin: VinPath, done: ServiceDone) -> CarScreen:
        agent = find(vin)
        agent.serviced(done.needs)
        return screen_of(agent)

    @app.post(
        "/cars/{vin}/key/challenge",
        response_model=KeyChallengeRead,
        summary="Ask the car for a one-time nonce to sign with the phone's key",
    )
    def key_challenge(vin: VinPath) -> KeyChallengeRead:
        challenge = find(vin).challenge()
        return KeyChallengeRead(vin=vin, nonce=challenge.nonce, expires_at=challenge.expires_at)

    @app.post(
        "/cars/{vin}/key/operate",
        response_model=KeyResult,
        responses={403: {"model": KeyResult, "description": "The car refused"}},
        summary="Unlock or start the car with a signed challenge",
    )
    def key_operate(vin: VinPath, operation: KeyOperation) -> Any:
        agent = find(vin)
        answer = agent.operate(
            operation.action, operation.key_id, operation.signature, nonce=operation.nonce
        )
        result = KeyResult(
            vin=vin,
            action=answer.action,
            granted=answer.granted,
            reason=answer.reason,
            message=_REFUSALS[answer.reason] if answer.reason else None,
            locked=agent.locked,
            started=agent.started,
        )
        if answer.granted:
            return result
        return JSONResponse(result.model_dump(mode="json"), status_code=403)

    return app
