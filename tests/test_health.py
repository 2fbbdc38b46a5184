from fastapi.testclient import TestClient


def test_health_and_readiness_answer(app_client: TestClient) -> None:
    assert app_client.get("/healthz").json() == {"status": "ok"}
    assert app_client.get("/readyz").json() == {"status": "ready"}


def test_metrics_count_requests(app_client: TestClient) -> None:
    app_client.get("/healthz")
    body = app_client.get("/metrics").text
    assert 'caas_http_requests_total{method="GET",route="/healthz",status="200"}' in body


def test_openapi_lists_routes_with_error_shapes(app_client: TestClient) -> None:
    spec = app_client.get("/openapi.json").json()
    login = spec["paths"]["/api/v1/auth/login"]["post"]
    assert {"401", "422", "429"} <= set(login["responses"])


def test_metrics_are_documented_as_what_they_are(app_client: TestClient) -> None:
    """The document says /metrics answers Prometheus' text format, as it does."""
    answer = app_client.get("/metrics")
    spec = app_client.get("/openapi.json").json()
    documented = spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(documented) == ["text/plain"]
    assert answer.headers["content-type"].split(";")[0] == "text/plain"
