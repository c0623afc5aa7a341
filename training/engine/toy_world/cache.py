"""A toy world built once per (settings, code) and reused: `cached_toy_world(ROOT, settings)`.

The world lives in ROOT/<key>/ where the key hashes the settings and the source of the modules
that render and train it, so changing either builds a new world beside the old one and an
unchanged one is never rebuilt. A build goes to a temporary folder renamed into place when it
is complete, so an interrupted build is started again rather than half-used. The world's sample
pool (photographs and stickers listed with their captions in a CSV manifest, drawn from seeds no training set uses) is
written beside it for the platform to ingest.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from training.engine.toy_world import scenes
from training.engine.toy_world.build import MARKER, ToyWorldSettings, build_toy_world

# The modules whose code decides what a built world holds.
_SOURCES = ("scenes.py", "base.py", "clip.py", "build.py")
POOL = "pool"
# Sample-pool seeds sit above every seed range render_world uses (< 10 million per world seed).
_POOL_SEED_OFFSET = 50_000_000


def code_version() -> str:
    digest = hashlib.sha256()
    folder = Path(__file__).parent
    for name in _SOURCES:
        digest.update(name.encode())
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()[:16]


def world_key(settings: ToyWorldSettings) -> str:
    payload = json.dumps({"settings": settings.to_dict(), "code": code_version()}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def write_pool(directory: Path, settings: ToyWorldSettings, per_content: int = 2) -> Path:
    """photos/ and stickers/ of every content and manifest.csv (path, caption) naming them all;
    returns the manifest, which the platform's ingestion reads captions from."""
    pool = directory / POOL
    rows = []
    for look, render in (("photos", scenes.photograph), ("stickers", scenes.sticker)):
        folder = pool / look
        folder.mkdir(parents=True, exist_ok=True)
        for index, content in enumerate(scenes.all_contents()):
            for k in range(per_content):
                seed = settings.seed * 1_000_000 + _POOL_SEED_OFFSET + index * 100 + k
                name = f"{look}/{content.caption.replace(' ', '-')}-{k}.png"
                render(content, seed, settings.resolution).save(pool / name)
                rows.append((name, content.caption))
    manifest = pool / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "caption"])
        writer.writerows(rows)
    return manifest


def cached_toy_world(
    root: str | Path,
    settings: ToyWorldSettings | None = None,
    *,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The toy world for `settings` under ROOT, built only when no complete one is there."""
    settings = settings or ToyWorldSettings.small()
    root = Path(root)
    target = root / world_key(settings)
    marker = target / MARKER
    if marker.is_file():
        log(f"toy world: reusing {target}")
    else:
        temporary = root / f"{target.name}.building"
        if temporary.exists():
            shutil.rmtree(temporary)
        temporary.mkdir(parents=True)
        log(f"toy world: building {target} (settings {settings.to_dict()})")
        build_toy_world(temporary, settings, log=log)
        # Paths were written while the world was in its temporary folder.
        for name in (MARKER, f"clip/{MARKER}"):
            path = temporary / name
            path.write_text(path.read_text().replace(str(temporary), str(target)))
        if target.exists():
            shutil.rmtree(target)
        temporary.rename(target)
    info = dict(json.loads(marker.read_text()))
    pool = target / POOL / "manifest.csv"
    if not pool.is_file():  # cheap to render; not part of the key, so written when missing
        write_pool(target, settings)
    return {**info, "pool": str(pool), "key": target.name, "directory": str(target)}
