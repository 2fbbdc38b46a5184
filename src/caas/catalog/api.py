"""Routes of the public catalog and the owner's manuals."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from caas.accounts.deps import CurrentUser
from caas.catalog import read
from caas.catalog.manuals import manual_etag, manual_language, owner_manual_pdf
from caas.catalog.schemas import PlatformRead
from caas.core.api import DbSession, error_responses

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
def list_platforms(session: DbSession, country: CountryQuery = None) -> list[PlatformRead]:
    return read.price_list(session, country=country)


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
