"""The OpenAPI document at /docs describes every route, field and error answer.

Each test lists everything missing at once, so one run shows the whole to-do list.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import sessionmaker

from caas.app import create_app
from caas.core.api import ValidationErrorBody
from caas.core.settings import Settings

Document = dict[str, Any]
Schema = dict[str, Any]

METHODS = {"get", "post", "put", "patch", "delete"}
OPERATIONS_ONLY = {"/healthz", "/readyz", "/metrics"}
# Routes whose only possible failure is malformed input (422), so 422 is all they document.
ONLY_BAD_INPUT = {
    "POST /api/v1/auth/activate": "a wrong, used or expired token is a 422 on `token`",
    "POST /api/v1/auth/activation-resend": "answers 202 whether or not the e-mail is known",
    "GET /api/v1/platforms": "the public catalog; only a malformed `country` is refused",
}
# Routes that cannot fail at all.
CANNOT_FAIL = {"POST /api/v1/auth/logout": "clearing the web session always succeeds"}
OUR_422 = "#/components/schemas/ValidationErrorBody"
OUR_ERROR = "#/components/schemas/ErrorBody"


def _build_document() -> Document:
    return create_app(settings=Settings(env="test"), sessions=sessionmaker()).openapi()


@pytest.fixture(scope="module")
def document() -> Document:
    return _build_document()


def _operations(document: Document) -> Iterator[tuple[str, Schema]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield f"{method.upper()} {path}", operation


def _report(missing: list[str]) -> str:
    return f"{len(missing)} missing:\n  " + "\n  ".join(missing)


def _resolve(document: Document, owner: Schema, ref: str) -> Schema:
    """A `$ref` inside the document (`#/components/...`) or inside an inline schema (`#/$defs/`)."""
    if ref.startswith("#/$defs/"):
        found: Schema = owner["$defs"][ref.removeprefix("#/$defs/")]
        return found
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return dict(node)


def _request_bodies(document: Document) -> Iterator[tuple[str, Schema, Schema]]:
    """(operation, schema, the inline schema owning any `#/$defs` refs) per request body."""
    for name, operation in _operations(document):
        content = operation.get("requestBody", {}).get("content", {})
        for media in content.values():
            yield name, media["schema"], media["schema"]


def _described_schemas(document: Document) -> Iterator[tuple[str, Schema]]:
    """Every object schema of the document: components, inline request bodies and their $defs."""
    yield from document["components"]["schemas"].items()
    for name, schema, _ in _request_bodies(document):
        if "$ref" not in schema:
            yield f"{name} (request body)", schema
            for def_name, definition in schema.get("$defs", {}).items():
                yield f"{name} (request body) {def_name}", definition


def _options(prop: Schema) -> list[Schema]:
    return [option for option in prop.get("anyOf", [prop]) if option.get("type") != "null"]


def _typed_by_a_person(prop: Schema) -> bool:
    """A free value someone writes: text, a number, a date, a list of those (not a choice)."""
    options = _options(prop)
    if not options or any("$ref" in o or "enum" in o or "const" in o for o in options):
        return False
    kinds = {option.get("type") for option in options}
    if kinds & {"string", "integer", "number"}:
        return True
    if "array" in kinds:
        items = [o.get("items", {}) for o in options if o.get("type") == "array"]
        return all(_typed_by_a_person(item) for item in items)
    return False


def _request_models(document: Document) -> Iterator[tuple[str, Schema]]:
    """The object schemas a request body is made of, nested ones included, each once."""
    seen: set[str] = set()

    def walk(name: str, schema: Schema, owner: Schema) -> Iterator[tuple[str, Schema]]:
        if "$ref" in schema:
            ref = schema["$ref"]
            if ref in seen:
                return
            seen.add(ref)
            yield from walk(ref.rsplit("/", 1)[-1], _resolve(document, owner, ref), owner)
            return
        for key in ("anyOf", "allOf", "oneOf"):
            for option in schema.get(key, []):
                yield from walk(name, option, owner)
        if "items" in schema:
            yield from walk(name, schema["items"], owner)
        if "properties" in schema:
            yield name, schema
            for prop in schema["properties"].values():
                yield from walk(name, prop, owner)

    for operation, schema, owner in _request_bodies(document):
        yield from walk(f"{operation} (request body)", schema, owner)


def test_every_operation_has_a_summary(document: Document) -> None:
    missing = [name for name, operation in _operations(document) if not operation.get("summary")]
    assert not missing, _report(missing)


def test_every_operation_that_can_fail_documents_its_errors(document: Document) -> None:
    missing = []
    for name, operation in _operations(document):
        path = name.split(" ", 1)[1]
        statuses = {int(status) for status in operation["responses"] if status.isdigit()}
        errors = {status for status in statuses if status >= 400}
        if path in OPERATIONS_ONLY or name in CANNOT_FAIL:
            continue
        if name in ONLY_BAD_INPUT:
            if 422 not in errors:
                missing.append(f"{name}: 422 ({ONLY_BAD_INPUT[name]})")
            continue
        if not errors - {422, 503}:
            missing.append(f"{name}: an error besides 422 and 503 (401, 404, 409...)")
        if operation.get("security") and 401 not in errors:
            missing.append(f"{name}: 401 (it takes a login)")
        if (operation.get("parameters") or operation.get("requestBody")) and 422 not in errors:
            missing.append(f"{name}: 422 (it takes input)")
    assert not missing, _report(missing)


def test_every_api_operation_documents_that_the_database_may_be_unavailable(
    document: Document,
) -> None:
    """Any request that reads the database can answer 503 `database.unavailable` or
    `database.conflict` with `Retry-After` (`caas.app`), so each operation says so."""
    missing = []
    for name, operation in _operations(document):
        if not name.split(" ", 1)[1].startswith("/api/") or name in CANNOT_FAIL:
            continue
        answer = operation["responses"].get("503", {})
        schema = answer.get("content", {}).get("application/json", {}).get("schema", {})
        header = answer.get("headers", {}).get("Retry-After", {})
        if schema.get("$ref") != OUR_ERROR:
            missing.append(f"{name}: 503 with the error shape")
        if "database.unavailable" not in answer.get("description", ""):
            missing.append(f"{name}: 503 saying the database may not answer")
        if header.get("schema", {}).get("type") != "integer" or not header.get("description"):
            missing.append(f"{name}: 503's Retry-After header (seconds)")
    assert not missing, _report(missing)


def test_the_exceptions_above_are_real_routes(document: Document) -> None:
    names = {name for name, _ in _operations(document)}
    assert set(ONLY_BAD_INPUT) | set(CANNOT_FAIL) <= names


def test_error_answers_use_the_shapes_the_application_sends(document: Document) -> None:
    wrong = []
    for name, operation in _operations(document):
        for status, answer in operation["responses"].items():
            if not status.isdigit() or int(status) < 400:
                continue
            schema = answer.get("content", {}).get("application/json", {}).get("schema", {})
            expected = OUR_422 if status == "422" else OUR_ERROR
            if schema.get("$ref") != expected:
                wrong.append(f"{name} {status}: {schema or 'no JSON schema'} (want {expected})")
            if not answer.get("description") or answer["description"] == "Validation Error":
                wrong.append(f"{name} {status}: a description of when it happens")
    assert not wrong, _report(wrong)
    assert "HTTPValidationError" not in json.dumps(document)
    assert "ValidationError" not in document["components"]["schemas"]


def test_every_ref_in_the_document_resolves(document: Document) -> None:
    broken = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                try:
                    _resolve(document, {}, ref)
                except KeyError:
                    broken.append(f"{where}: {ref}")
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{where}/{index}")

    walk(document, "#")
    assert not broken, _report(broken)


def test_every_field_is_described(document: Document) -> None:
    missing = [
        f"{schema_name}.{field}"
        for schema_name, schema in _described_schemas(document)
        for field, prop in schema.get("properties", {}).items()
        if not prop.get("description")
    ]
    assert not missing, _report(missing)


def test_every_parameter_is_described(document: Document) -> None:
    missing = [
        f"{name}: {parameter['in']} {parameter['name']}"
        for name, operation in _operations(document)
        for parameter in operation.get("parameters", [])
        if not parameter.get("description")
    ]
    assert not missing, _report(missing)


def test_what_a_person_types_in_a_request_has_an_example(document: Document) -> None:
    missing = [
        f"{schema_name}.{field}"
        for schema_name, schema in _request_models(document)
        for field, prop in schema["properties"].items()
        if _typed_by_a_person(prop) and not prop.get("examples")
    ]
    assert not missing, _report(missing)


def test_every_application_gets_the_same_document(document: Document) -> None:
    # Tidying the document must not change what the routes declare for the next application.
    assert _build_document() == document


def test_invalid_input_answers_the_documented_shape(app_client: TestClient) -> None:
    malformed = app_client.post("/api/v1/auth/login", json={"email": "ana@example.es"})
    assert malformed.status_code == 422
    body = ValidationErrorBody.model_validate(malformed.json())
    assert (body.code, body.field) == ("invalid_input", "password")
    assert body.errors is not None and body.errors[0].field == "password"

    refused = app_client.post(
        "/api/v1/auth/activate", json={"token": "not-a-token", "password": "a long passphrase"}
    )
    assert refused.status_code == 422
    body = ValidationErrorBody.model_validate(refused.json())
    assert (body.code, body.field) == ("account.activation_invalid", "token")
