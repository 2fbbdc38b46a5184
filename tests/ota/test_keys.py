"""The key ceremony: `caas keys` in a scratch directory, the platform's signing material, and
the demo's keys."""

from __future__ import annotations

import json
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from caas.cli import app
from caas.core.clock import FixedClock
from caas.core.settings import Settings
from caas.ota import keys
from caas.ota.keys import (
    KeyMaterialError,
    ensure_demo_keys,
    init_root,
    issue_signing,
    load_signing_material,
)
from caas.protocol.manifest import (
    certified_by,
    issue_certificate,
    load_public_key_b64,
    private_key_to_pem,
    public_key_b64,
    verify_manifest,
)
from caas.protocol.mqtt import ManifestBody, encode
from caas.protocol.vin import make_vin

runner = CliRunner()
VIN = make_vin("VCA", "AURA0", "T", "M", 1)
NOW = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)


def a_body(version: int = 1) -> ManifestBody:
    return ManifestBody(vin=VIN, version=version, issued_at=NOW, features=[], phone_keys=[])


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def one_line_error(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    return line


# --- caas keys ------------------------------------------------------------------------------


def test_init_root_writes_a_private_root_key_and_its_public_half(tmp_path: Path) -> None:
    offline = tmp_path / "offline"
    result = runner.invoke(app, ["keys", "init-root", "--out", str(offline)])
    assert result.exit_code == 0, result.output

    root_public = (offline / "root.pub").read_text().strip()
    assert root_public in result.stdout
    assert "PRIVATE KEY" not in result.stdout
    assert mode_of(offline / "root.key") == 0o600
    root = keys.read_private_key(offline / "root.key")
    assert public_key_b64(root) == root_public


def test_init_root_never_overwrites_a_root_key(tmp_path: Path) -> None:
    assert runner.invoke(app, ["keys", "init-root", "--out", str(tmp_path)]).exit_code == 0
    before = (tmp_path / "root.key").read_bytes()
    line = one_line_error(["keys", "init-root", "--out", str(tmp_path)])
    assert line.startswith("caas keys init-root: ")
    assert "exists already" in line
    assert (tmp_path / "root.key").read_bytes() == before


def test_issue_signing_certifies_a_new_key_the_platform_can_load(tmp_path: Path) -> None:
    offline, platform = tmp_path / "offline", tmp_path / "platform"
    runner.invoke(app, ["keys", "init-root", "--out", str(offline)])
    args = ["keys", "issue-signing", "--root", str(offline / "root.key"), "--out", str(platform),
            "--days", "30", "--key-id", "signing-2026-q1"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "signing-2026-q1" in result.stdout

    assert sorted(path.name for path in platform.iterdir()) == [
        "root.pub",
        "signing.cert.json",
        "signing.key",
    ]
    assert mode_of(platform / "signing.key") == 0o600
    material = load_signing_material(platform)
    pinned = load_public_key_b64((offline / "root.pub").read_text())
    assert public_key_b64(material.root_public_key) == public_key_b64(pinned)
    certificate = material.certificate
    assert certificate.key_id == "signing-2026-q1"
    assert certificate.not_after - certificate.not_before == timedelta(days=30, hours=1)
    assert certificate.not_before < datetime.now(UTC) < certificate.not_after

    manifest = material.sign(a_body())
    accepted = verify_manifest(
        encode(manifest), root_public_key=pinned, vin=VIN, current_version=0,
        now=datetime.now(UTC),
    )  # fmt: skip
    assert accepted.version == 1


def test_a_new_signing_key_replaces_the_old_one_under_the_same_root(tmp_path: Path) -> None:
    init_root(tmp_path / "offline")
    first = issue_signing(tmp_path / "offline/root.key", tmp_path / "keys", now=NOW)
    second = issue_signing(tmp_path / "offline/root.key", tmp_path / "keys", now=NOW, days=10)
    assert first.public_key != second.public_key
    assert first.key_id != second.key_id
    material = load_signing_material(tmp_path / "keys")
    assert material.certificate == second
    assert certified_by(first, material.root_public_key)  # both vouched for by the same root


def test_show_tells_what_a_directory_holds_without_secrets(tmp_path: Path) -> None:
    runner.invoke(app, ["keys", "init-root", "--out", str(tmp_path)])
    runner.invoke(app, ["keys", "issue-signing", "--root", str(tmp_path / "root.key"),
                        "--out", str(tmp_path), "--key-id", "signing-x"])  # fmt: skip
    result = runner.invoke(app, ["keys", "show", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "root.pub").read_text().strip() in result.stdout
    assert "signing-x" in result.stdout
    assert "keep this directory offline" in result.stdout
    assert "PRIVATE" not in result.stdout
    for secret in ("root.key", "signing.key"):
        body = b"".join((tmp_path / secret).read_bytes().splitlines()[1:-1]).decode()
        assert body not in result.stdout


def test_show_refuses_a_certificate_from_another_root(tmp_path: Path) -> None:
    ensure_demo_keys(tmp_path)
    other_root = public_key_b64(Ed25519PrivateKey.generate())
    (tmp_path / "root.pub").write_text(other_root)
    line = one_line_error(["keys", "show", str(tmp_path)])
    assert line.startswith("caas keys show: ")
    assert "not signed by the root key" in line


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["keys", "issue-signing", "--root", "{tmp}/nowhere.key", "--out", "{tmp}/k"],
         "caas keys issue-signing: Invalid value for '--root'"),
        (["keys", "issue-signing", "--root", "{tmp}/not-a-key", "--out", "{tmp}/k"],
         "caas keys issue-signing: {tmp}/not-a-key: not an unencrypted private key in PEM"),
        (["keys", "issue-signing", "--root", "{tmp}/not-a-key", "--out", "{tmp}/k",
          "--days", "0"], "caas keys issue-signing: Invalid value for '--days'"),
        (["keys", "issue-signing", "--root", "{tmp}/root.key", "--out", "{tmp}/k",
          "--key-id", "my key"], "caas keys issue-signing: key_id: String should match"),
        (["keys", "issue-signing", "--out", "{tmp}/k"],
         "caas keys issue-signing: Missing option '--root'"),
        (["keys", "init-root", "--out", "{tmp}/not-a-key"],
         "caas keys init-root: Invalid value for '--out'"),
        (["keys", "init-root", "--out", "{tmp}/not-a-key/below"], "caas keys init-root: "),
        (["keys", "show", "{tmp}/nowhere"], "caas keys show: Invalid value for 'directory'"),
        (["keys", "rotate"], "caas keys: No such command 'rotate'"),
    ],
)  # fmt: skip
def test_bad_paths_and_arguments_are_one_line_and_exit_code_2(
    tmp_path: Path, args: list[str], says: str
) -> None:
    (tmp_path / "not-a-key").write_text("hello")
    (tmp_path / "root.key").write_bytes(private_key_to_pem(Ed25519PrivateKey.generate()))
    line = one_line_error([arg.format(tmp=tmp_path) for arg in args])
    assert line.startswith(says.format(tmp=tmp_path)), line
    assert not (tmp_path / "k").exists()


def test_keys_is_listed_in_the_help() -> None:
    result = runner.invoke(app, ["keys", "--help"])
    assert result.exit_code == 0
    for command in ("init-root", "issue-signing", "show"):
        assert command in result.stdout


# --- what the platform loads ----------------------------------------------------------------


def test_the_platform_never_opens_a_root_private_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    init_root(tmp_path)
    issue_signing(tmp_path / "root.key", tmp_path, now=NOW)
    ensure_demo_keys(tmp_path / "demo")
    opened: list[str] = []
    read_bytes = Path.read_bytes

    def spy(path: Path) -> bytes:
        opened.append(path.name)
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", spy)
    load_signing_material(tmp_path)
    load_signing_material(tmp_path / "demo")
    ensure_demo_keys(tmp_path / "demo")
    assert "root.key" not in opened
    assert "demo-root.key" not in opened
    assert set(opened) == {"root.pub", "signing.key", "signing.cert.json"}


@pytest.mark.parametrize("missing", ["root.pub", "signing.key", "signing.cert.json"])
def test_a_missing_file_is_named(tmp_path: Path, missing: str) -> None:
    ensure_demo_keys(tmp_path)
    (tmp_path / missing).unlink()
    with pytest.raises(KeyMaterialError, match=f"{missing} is missing"):
        load_signing_material(tmp_path)


def test_a_certificate_for_another_signing_key_is_refused(tmp_path: Path) -> None:
    ensure_demo_keys(tmp_path)
    (tmp_path / "signing.key").write_bytes(private_key_to_pem(Ed25519PrivateKey.generate()))
    with pytest.raises(KeyMaterialError, match="certifies another key"):
        load_signing_material(tmp_path)


def test_a_certificate_from_another_root_is_refused(tmp_path: Path) -> None:
    material = ensure_demo_keys(tmp_path)
    forged = issue_certificate(
        Ed25519PrivateKey.generate(),
        material.signing_key.public_key(),
        key_id="forged",
        not_before=NOW,
        not_after=NOW + timedelta(days=1),
    )
    (tmp_path / "signing.cert.json").write_bytes(encode(forged))
    with pytest.raises(KeyMaterialError, match="not signed by the root key"):
        load_signing_material(tmp_path)


def test_a_corrupt_certificate_is_refused(tmp_path: Path) -> None:
    ensure_demo_keys(tmp_path)
    document = json.loads((tmp_path / "signing.cert.json").read_text())
    (tmp_path / "signing.cert.json").write_text(json.dumps({**document, "not_after": "soon"}))
    with pytest.raises(KeyMaterialError, match="not_after"):
        load_signing_material(tmp_path)


# --- the demo's keys ------------------------------------------------------------------------


def test_demo_keys_are_created_once_and_kept(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    first = ensure_demo_keys(directory)
    again = ensure_demo_keys(directory)
    assert again.certificate == first.certificate
    assert public_key_b64(again.signing_key) == public_key_b64(first.signing_key)
    assert mode_of(directory / "demo-root.key") == 0o600
    assert mode_of(directory / "signing.key") == 0o600
    assert not (directory / "root.key").exists()
    demo_root = keys.read_private_key(directory / "demo-root.key")
    assert public_key_b64(demo_root) == (directory / "root.pub").read_text().strip()


def test_demo_certificate_covers_test_clocks_and_the_real_one(tmp_path: Path) -> None:
    material = ensure_demo_keys(tmp_path)
    manifest = encode(material.sign(a_body(version=2)))
    for now in (FixedClock().now(), datetime.now(UTC), datetime(2030, 6, 1, tzinfo=UTC)):
        accepted = verify_manifest(
            manifest, root_public_key=material.root_public_key, vin=VIN, current_version=1,
            now=now,
        )  # fmt: skip
        assert accepted.version == 2


def test_the_demo_signing_key_can_be_rotated_with_its_root(tmp_path: Path) -> None:
    old = ensure_demo_keys(tmp_path)
    result = runner.invoke(app, ["keys", "issue-signing", "--root", str(tmp_path / "demo-root.key"),
                                 "--out", str(tmp_path)])  # fmt: skip
    assert result.exit_code == 0, result.output
    new = load_signing_material(tmp_path)
    assert new.certificate.public_key != old.certificate.public_key
    assert public_key_b64(new.root_public_key) == public_key_b64(old.root_public_key)


def test_demo_keys_created_by_many_threads_at_once_are_one_set(tmp_path: Path) -> None:
    certificates: list[str] = []

    def create() -> None:
        certificates.append(ensure_demo_keys(tmp_path).certificate.key_id)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(certificates) == 8
    assert len(set(certificates)) == 1
    assert load_signing_material(tmp_path).certificate.key_id == certificates[0]


def test_the_platform_finds_its_keys_under_the_data_dir_unless_told(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path).ota_keys_path == tmp_path / "keys"
    assert Settings(data_dir=tmp_path, ota_keys_dir=tmp_path / "elsewhere").ota_keys_path == (
        tmp_path / "elsewhere"
    )
