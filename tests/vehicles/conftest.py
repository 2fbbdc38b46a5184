"""The manifest signing key for tests that change a car's configuration."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from caas.ota.keys import SigningMaterial, ensure_demo_keys
from caas.ota.service import use_signing_material


@pytest.fixture(scope="session")
def signing_material(tmp_path_factory: pytest.TempPathFactory) -> SigningMaterial:
    """The maker's demo keys, made once per run in a scratch directory."""
    return ensure_demo_keys(tmp_path_factory.mktemp("ota-keys"))


@pytest.fixture(autouse=True)
def signing_with(signing_material: SigningMaterial) -> Iterator[SigningMaterial]:
    """The platform signs with `signing_material` during each test here, whatever other tests
    installed before."""
    use_signing_material(signing_material)
    yield signing_material
    use_signing_material(None)
