"""The embedded PostgreSQL from the pgserver wheel, for the demo and machines without a server."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def start_embedded_postgres(data_dir: Path) -> tuple[Any, str]:
    """Start (or reuse) a private PostgreSQL under `data_dir`; return it and its SQLAlchemy URL."""
    import pgserver  # type: ignore[attr-defined,unused-ignore]

    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(  # type: ignore[attr-defined,unused-ignore]
        str(data_dir.resolve()), cleanup_mode="stop"
    )
    uri: str = server.get_uri()
    return server, uri
