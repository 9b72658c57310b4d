"""The official StepGame release files, fetched from their public source, verified and cached.

``raypost data stepgame --official`` downloads ``{clean,noise}/qa{k}_{split}.json`` from the
StepGame repository (``Dataset/CompleteVersion``, MIT licence), checks each file's SHA-256
against ``official_sha256.json`` (committed in the package), keeps it in a cache
(``$RAYPOST_CACHE/stepgame``, default ``~/.cache/raypost/stepgame``) and copies it to ``--out``.
Nothing unverified is ever kept: a download goes to a temporary file that is renamed into the
cache only when its checksum matches. ``--url-base`` (or ``$RAYPOST_STEPGAME_URL``) points at a
mirror with the same layout.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path

from raypost import knobs
from raypost.errors import ConfigError, DataError, SourceError
from raypost.files import writable_dir

URL_BASE = "https://raw.githubusercontent.com/ZhengxiangShi/StepGame/main/Dataset/CompleteVersion"
URL_ENV = "RAYPOST_STEPGAME_URL"
SPLITS = ("train", "valid", "test")
TIMEOUT_S = 30


def pinned() -> dict[str, dict]:
    """``{"clean/qa1_valid.json": {"sha256": ..., "bytes": ...}, ...}``: the files raypost can verify."""
    return json.loads(resources.files("raypost.stepgame").joinpath("official_sha256.json").read_text())


def release_names(split: str, ks: list[int], noise: bool) -> list[str]:
    if split not in SPLITS:
        raise ConfigError(f"--split {split!r}: the official release has {', '.join(SPLITS)}")
    names = [f"{'noise' if noise else 'clean'}/qa{k}_{split}.json" for k in ks]
    known = pinned()
    for name in names:
        if name not in known:
            have = sorted({n.split("_")[-1].removesuffix(".json") for n in known})
            raise ConfigError(f"--split {split}: raypost has no pinned checksum for {name}, so it cannot verify it "
                              f"(pinned: the {', '.join(have)} files, k = 1..10, clean and noise)")
    return names


def fetch(split: str, ks: list[int], noise: bool, out: str | Path, url_base: str | None = None) -> list[Path]:
    """Every requested file into ``out`` (verified, from the cache when it is there); the
    targets are checked before the first download."""
    names = release_names(split, ks, noise)
    out = writable_dir(out, "--out")
    for name in names:
        if (out / Path(name).name).is_dir():
            raise ConfigError(f"--out {out}: {Path(name).name} is a directory; nothing was written")
    base = (url_base or os.environ.get(URL_ENV) or URL_BASE).rstrip("/")
    sums = pinned()
    cached = [_cached(base, name, sums[name]["sha256"]) for name in names]
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, source in zip(names, cached):
        target = out / Path(name).name
        _copy_atomic(source, target)
        written.append(target)
    return written


def cache_dir() -> Path:
    return knobs.cache_dir() / "stepgame"


def _cached(base: str, name: str, sha256: str) -> Path:
    path = cache_dir() / name
    if path.is_file() and _sha256(path) == sha256:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    _download(f"{base}/{name}", path, sha256)
    return path


def _download(url: str, path: Path, sha256: str) -> None:
    """``url`` to ``path`` through a temporary file beside it; renamed only if its SHA-256 matches."""
    import urllib.error
    import urllib.request

    from tqdm.auto import tqdm

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as fh:
            try:
                with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
                    size = int(response.headers.get("Content-Length") or 0) or None
                    with tqdm(total=size, unit="B", unit_scale=True, desc=path.name, disable=None, leave=False) as bar:
                        while chunk := response.read(1 << 16):
                            fh.write(chunk)
                            digest.update(chunk)
                            bar.update(len(chunk))
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", None) or exc
                raise SourceError(f"cannot fetch {url}: {reason}") from None
        if digest.hexdigest() != sha256:
            raise DataError(f"{url}: checksum mismatch for {path.name} (sha256 {digest.hexdigest()[:16]}..., "
                            f"pinned {sha256[:16]}...); nothing was kept")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _copy_atomic(source: Path, target: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
