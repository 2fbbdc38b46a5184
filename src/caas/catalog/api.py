"""Routes of the public catalog, the owner's manuals and the operator's features."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from caas.accounts.deps import CurrentUser, Operator, actor_of
from caas.accounts.models import Role
from caas.catalog import read
from caas.catalog import service as catalog
from caas.catalog.manuals import manual_etag, manual_language, owner_manual_pdf
from caas.catalog.schemas import FeatureCreate, FeatureRead, FeatureUpdate, PlatformRead
from caas.core.api import ClockDep, DbSession, error_responses
from caas.core.idempotency import once

router = APIRouter(prefix="/api/v1", tags=["catalog"])

CountryQuery = Annotated[
    Literal["ES", "FR", "DE", "IT", "PT"] | None,
    Query(description="Only this country's prices (all countries when omitted)"),
]


@router.get(
    "/platforms",
    response_model=list[PlatformRead],
    summary="The public catalog: platform models, their options, plan and prices per country",
    responses=error_responses(422),
)
def list_platforms(
    session: DbSession, clock: ClockDep, country: CountryQuery = None
) -> list[PlatformRead]:
    return read.price_list(session, at=clock.now(), country=country)


@router.get(
    "/platforms/{code}/manual.pdf",
    summary="The owner's manual of a platform model, as a PDF",
    response_class=Response,
    responses={
        200: {"content": {"application/pdf": {}}, "description": "The manual"},
        **error_responses(401, 404, 422),
    },
)
def platform_manual(
    code: Annotated[
        str, Path(description="Code of the platform model, any case", examples=["AURA"])
    ],
    request: Request,
    session: DbSession,
    user: CurrentUser,
    lang: Annotated[
        Literal["en", "es", "fr", "de", "it", "pt"] | None,
        Query(description="Language; the reader's own when omitted; English when not written"),
    ] = None,
) -> Response:
    language = manual_language(lang or user.language)
    pdf = owner_manual_pdf(read.manual_model(session, code.upper()), language)
    etag = manual_etag(pdf)
    headers = {
        "ETag": etag,
        "Cache-Control": "private, max-age=3600",
        "Content-Language": language,
        "Content-Disposition": f'inline; filename="caas-{code.lower()}-manual-{language}.pdf"',
    }
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(pdf, media_type="application/pdf", headers=headers)


PlatformCode = Annotated[
    str,
    Path(max_length=20, description="Code of the platform model, any case", examples=["CIRRUS"]),
]
FeatureCodePath = Annotated[
    str, Path(max_length=40, description="Code of the feature", examples=["motorway_autopilot"])
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Unique per intended change; a retry with the same key acts once",
    ),
]


@router.get(
    "/platforms/{code}/features",
    response_model=list[FeatureRead],
    summary="The features of a platform model: names, requirements, countries, compliance",
    description="Any signed-in user reads the features on sale; the operator also sees the "
    "withdrawn ones. Names and descriptions come in the reader's language (else English).",
    responses=error_responses(401, 404, 422),
)
def list_features(code: PlatformCode, session: DbSession, user: CurrentUser) -> list[FeatureRead]:
    platform = catalog.platform_or_404(session, code)
    features = catalog.platform_features(session, platform.id)
    if user.role is not Role.OPERATOR:
        features = [feature for feature in features if feature.active]
    return [read.feature_read(feature, platform, user.language) for feature in features]


@router.post(
    "/platforms/{code}/features",
    response_model=FeatureRead,
    status_code=201,
    summary="Add a feature to a platform model (operator)",
    description="422 names the field at fault: an unknown required or conflicting code, a "
    "feature naming itself, requiring and conflicting with the same code, a cycle of "
    "requirements, an unknown country, a malformed software version, a language other than "
    "es, en, fr, de, it, pt. 409 when the platform already has the code.",
    responses=error_responses(401, 403, 404, 409, 422),
)
def create_feature(
    code: PlatformCode,
    body: FeatureCreate,
    session: DbSession,
    clock: ClockDep,
    user: Operator,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    now = clock.now()
    platform = catalog.platform_or_404(session, code)

    def act() -> dict[str, Any]:
        feature = catalog.create_feature(session, platform, body, actor=actor_of(user), now=now)
        return read.feature_read(feature, platform, user.language).model_dump(mode="json")

    response = once(
        session,
        principal=f"user:{user.id}",
        key=idempotency_key,
        operation=f"catalog.feature.create:{platform.code}",
        request=body.model_dump(mode="json"),
        now=now,
        act=act,
    )
    return JSONResponse(response, status_code=201)


@router.patch(
    "/platforms/{code}/features/{feature_code}",
    response_model=FeatureRead,
    summary="Change a feature, withdraw it from sale or reinstate it (operator)",
    description="Only the fields sent change. Withdrawn (`active: false`), nothing new is "
    "sold; what customers own runs on. 422 as for creating a feature.",
    responses=error_responses(401, 403, 404, 409, 422),
)
def update_feature(
    code: PlatformCode,
    feature_code: FeatureCodePath,
    body: FeatureUpdate,
    session: DbSession,
    clock: ClockDep,
    user: Operator,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    now = clock.now()
    platform = catalog.platform_or_404(session, code)

    def act() -> dict[str, Any]:
        feature = catalog.get_feature(session, platform, feature_code, lock=True)
        catalog.update_feature(session, feature, body, actor=actor_of(user), now=now)
        return read.feature_read(feature, platform, user.language).model_dump(mode="json")

    return JSONResponse(
        once(
            session,
            principal=f"user:{user.id}",
            key=idempotency_key,
            operation=f"catalog.feature.update:{platform.code}:{feature_code}",
            request=body.model_dump(mode="json", exclude_unset=True),
            now=now,
            act=act,
        )
    )
