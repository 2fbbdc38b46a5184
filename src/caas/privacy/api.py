"""Routes of the customer's data: consents and their history, the export, corrections, the
erasure of the account, and offers tailored to how the car is used."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query
from fastapi.responses import StreamingResponse

from caas.accounts.deps import CustomerUser, Operator, actor_of
from caas.core.api import ClockDep, DbSession, error_responses
from caas.core.idempotency import once
from caas.privacy import erasure, export, profile, service, suggestions, usage
from caas.privacy.schemas import (
    ConsentChangeRead,
    ConsentRead,
    ConsentsUpdate,
    ErasureCreate,
    ErasureRead,
    FeatureUseRead,
    ProfileChangeRead,
    ProfileUpdate,
    SuggestionRead,
)
from caas.sales.schemas import CustomerRead
from caas.sales.service import customer_of_user

router = APIRouter(prefix="/api/v1", tags=["privacy"])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Unique per intended command; a retry with the same key acts once",
    ),
]
Vin = Annotated[str, Path(description="The car's VIN", examples=["VCAAURA02TM000001"])]


@router.get(
    "/me/consents",
    response_model=list[ConsentRead],
    summary="What the customer lets the maker keep of their car's data, and use it for",
    description="Every purpose with its answer: `service` always on (the service needs it), "
    "the others off until the customer turns them on.",
    responses=error_responses(401, 403, 404),
)
def read_consents(session: DbSession, user: CustomerUser) -> list[ConsentRead]:
    customer = customer_of_user(session, user)
    return [ConsentRead.of(state) for state in service.consents_of(session, customer.id)]


@router.put(
    "/me/consents",
    response_model=list[ConsentRead],
    summary="Give or withdraw consent, purpose by purpose",
    description="Send the purposes to change (`service` is not a choice). Each change is kept "
    "in the customer's file; withdrawing stops that use from the next time it would happen. "
    "Sending the same answers again changes nothing, so a retry is harmless (no "
    "Idempotency-Key needed).",
    responses=error_responses(401, 403, 404, 422),
)
def update_consents(
    body: ConsentsUpdate, session: DbSession, clock: ClockDep, user: CustomerUser
) -> list[ConsentRead]:
    customer = customer_of_user(session, user)
    states = service.set_consents(
        session,
        customer_id=customer.id,
        choices=body.choices(),
        actor=actor_of(user),
        now=clock.now(),
    )
    return [ConsentRead.of(state) for state in states]


@router.get(
    "/me/consents/history",
    response_model=list[ConsentChangeRead],
    summary="Every change of the customer's consents, oldest first",
    responses=error_responses(401, 403, 404),
)
def consent_history(session: DbSession, user: CustomerUser) -> list[ConsentChangeRead]:
    customer = customer_of_user(session, user)
    return [ConsentChangeRead.of(entry) for entry in service.consent_history(session, customer.id)]


@router.get(
    "/me/export",
    response_class=StreamingResponse,
    summary="Download everything the maker holds about the customer, as a ZIP",
    description="`data.json` (every row about the customer from every table that holds their "
    "data, secrets redacted, with `schema_version`; invoices and the ledger marked as retained "
    "by law) and the PDFs of their invoices and credit notes. Streamed as it is written.",
    responses={
        200: {"content": {"application/zip": {}}, "description": "The ZIP"},
        **error_responses(401, 403, 404),
    },
)
def download_export(session: DbSession, clock: ClockDep, user: CustomerUser) -> StreamingResponse:
    customer = customer_of_user(session, user)
    now = clock.now()
    archive = export.build_export(session, customer, now=now)
    name = f"caas-my-data-{now:%Y%m%d}.zip"
    return StreamingResponse(
        export.chunks(archive),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.patch(
    "/me/profile",
    response_model=list[ProfileChangeRead],
    summary="Correct the customer's name, address, phone or language",
    description="Fields left out stay. The phone and postal code are checked for the "
    "customer's country; the national id is corrected by the dealer (422 on `national_id`). "
    "The file keeps each correction with the old and new values. Needs an Idempotency-Key.",
    responses=error_responses(401, 403, 404, 409, 422),
)
def correct_profile(
    body: ProfileUpdate,
    session: DbSession,
    clock: ClockDep,
    user: CustomerUser,
    idempotency_key: IdempotencyKey = None,
) -> list[dict[str, Any]]:
    customer = customer_of_user(session, user)
    now = clock.now()
    wanted = body.model_dump(exclude_none=True)

    def act() -> dict[str, Any]:
        changes = profile.correct_profile(
            session,
            customer=customer,
            user=user,
            correction=profile.Correction(**wanted),
            actor=actor_of(user),
            now=now,
        )
        return {
            "changes": [
                ProfileChangeRead(field=name, old=old, new=new).model_dump()
                for name, (old, new) in changes.items()
            ]
        }

    answer = once(
        session,
        principal=f"user:{user.id}",
        key=idempotency_key,
        operation="profile.correct",
        request=wanted,
        now=now,
        act=act,
    )
    changes: list[dict[str, Any]] = answer["changes"]
    return changes


@router.get(
    "/me/profile",
    response_model=CustomerRead,
    summary="The customer's identity and address as the maker holds them",
    responses=error_responses(401, 403, 404),
)
def read_profile(session: DbSession, user: CustomerUser) -> CustomerRead:
    return CustomerRead.model_validate(customer_of_user(session, user))


@router.post(
    "/me/erasure",
    response_model=ErasureRead,
    status_code=201,
    summary="Erase the customer's account (confirmed with the password)",
    description="Refused (409, with the reason's code) while the customer still owns a car "
    "(sell or transfer it first), has an order on its way, a subscription running or a "
    "payment in progress; 403 for a wrong password. Personal data are anonymised, logins and "
    "tokens deleted, consents withdrawn, telemetry and notifications deleted; invoices and the "
    "ledger are kept by law and marked so. The login stops working at once.",
    responses=error_responses(401, 403, 404, 409, 422),
)
def erase_account(
    body: ErasureCreate,
    session: DbSession,
    clock: ClockDep,
    user: CustomerUser,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    customer = customer_of_user(session, user)
    now = clock.now()

    def act() -> dict[str, Any]:
        done = erasure.erase_account(
            session, customer=customer, user=user, password=body.password, now=now
        )
        return ErasureRead(
            erased_at=done.erased_at,
            retained=done.retained["reason"],
            invoices=done.retained["invoices"],
        ).model_dump(mode="json")

    return once(
        session,
        principal=f"user:{user.id}",
        key=idempotency_key,
        operation=erasure.ERASE_OPERATION,
        request={},  # the password is not kept
        now=now,
        act=act,
    )


@router.get(
    "/me/vehicles/{vin}/suggestions",
    response_model=list[SuggestionRead],
    summary="Cheaper offers for how the car is used (with consent only)",
    description="From last month's metered use (customer's zone) and the last 30 days' "
    "telemetry (days driven in winter or cold, km driven, km on motorways: the last only with "
    "`driving_style` in force too): offers that would cost less than the way the use is (or "
    "would be) bought, with the reason and the saving, largest first. Only while the "
    "customer consents to `tailored_offers` (403 `privacy.consent_required` otherwise: "
    "nothing is read). 404 for a car that is not the caller's.",
    responses=error_responses(401, 403, 404),
)
def read_suggestions(
    vin: Vin, session: DbSession, clock: ClockDep, user: CustomerUser
) -> list[SuggestionRead]:
    found = suggestions.suggestions_for(
        session, user=user, vin=vin, now=clock.now(), language=user.language
    )
    return [SuggestionRead.of(suggestion, user.language) for suggestion in found]


@router.get(
    "/product-improvement/usage",
    response_model=list[FeatureUseRead],
    summary="How the fleet used its metered options in a month, from consenting owners only",
    description="Operators only. Counts only the cars whose owners consent to "
    "`product_improvement` at the time of reading; names no car or person.",
    responses=error_responses(401, 403, 422),
)
def product_usage(
    _: Operator,
    session: DbSession,
    month: Annotated[
        str,
        Query(
            pattern=r"^(19|2\d)\d{2}-(0[1-9]|1[0-2])$",
            description="The month, YYYY-MM (UTC), of the years 1900 to 2999",
            examples=["2026-01"],
        ),
    ],
) -> list[FeatureUseRead]:
    year, number = (int(part) for part in month.split("-"))
    start = datetime(year, number, 1, tzinfo=UTC)
    end = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=UTC)
    return [FeatureUseRead.of(use) for use in usage.fleet_usage(session, start=start, end=end)]
