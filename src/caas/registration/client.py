"""HTTP to the registries: one POST per attempt, at the adapter's path."""

from __future__ import annotations

from typing import Any

import httpx

from caas.registration.base import RegistrationAdapter, RegistryUnavailable


class RegistryClient:
    """Sends an adapter's request to the registries' base URL with the platform's API key."""

    def __init__(self, *, base_url: str, api_key: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        # One pooled client for the worker's lifetime (thread-safe; TLS set up once).
        self._http = httpx.Client(headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout)

    def send(self, adapter: RegistrationAdapter, request: dict[str, Any]) -> tuple[int, Any]:
        """(HTTP status, JSON body or raw text); RegistryUnavailable when unreachable."""
        return self.post(adapter, adapter.path, request)

    def post(
        self, adapter: RegistrationAdapter, path: str, request: dict[str, Any]
    ) -> tuple[int, Any]:
        """`request` to `path` of the adapter's registry (a registered car's own resource)."""
        try:
            response = self._http.post(self.base_url + path, json=request)
        except httpx.HTTPError as error:
            raise RegistryUnavailable(f"{adapter.authority} unreachable: {error}") from error
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text[:2000]
        return response.status_code, body

    def close(self) -> None:
        self._http.close()
