"""Training data: DatasetVersion manifests, the image dataset, deterministic batch order, latents.

A run trains on exact, frozen data: the manifest's bytes must hash to the checksum the version was
frozen with, or the run is refused before any step. Batch order is a pure function of (seed,
epoch, cursor), which is what lets a resumed run see exactly the samples an uninterrupted one
would. Latents are cached per (image, resolution, VAE weights) because the VAE encoder is a large
share of a step on real models and its output never changes for a frozen image.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from training.engine.families.base import Geometry

logger = logging.getLogger(__name__)

# A resolver turns a manifest row into something Pillow can open: a path, raw bytes or an Image.
ImageSource = str | Path | bytes | Image.Image
Resolver = Callable[["ManifestRow"], ImageSource]

# Alpha is composited on white: stickers are designed to sit on light backgrounds.
TRAINING_BACKGROUND = (255, 255, 255)


class ManifestError(ValueError):
    """A manifest cannot be used: unreadable, missing columns, or bad rows."""


class ManifestChecksumError(ManifestError):
    """The manifest's bytes differ from the checksum its DatasetVersion was frozen with."""

    def __init__(self, path: Path, expected: str, actual: str) -> None:
        super().__init__(
            f"{path}: manifest checksum mismatch: expected sha256 {expected}, got {actual}; "
            "the file changed after its dataset version was frozen, refusing to train on it"
        )
        self.path, self.expected, self.actual = path, expected, actual


class ImageLoadError(OSError):
    """One sample's image could not be opened; names the sample so the bad file can be found."""


@dataclass(frozen=True)
class ManifestRow:
    image_sha256: str
    caption: str
    label: str | None = None
    weight: float = 1.0
    split: str | None = None
    image_path: str | None = None


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_manifest_checksum(path: str | Path, expected_sha256: str) -> None:
    path = Path(path)
    actual = file_sha256(path)
    if actual != expected_sha256.lower():
        raise ManifestChecksumError(path, expected_sha256, actual)


def read_manifest(
    path: str | Path, expected_sha256: str | None = None, split: str | None = None
) -> list[ManifestRow]:
    """Rows of a Parquet manifest, after checking its checksum when one is given.

    Text comes from `caption`, else `prompt`; `weight` defaults to 1 and `split` filters rows.
    """
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest file not found")
    if expected_sha256 is not None:
        verify_manifest_checksum(path, expected_sha256)
    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow raises several unrelated types for bad files
        raise ManifestError(f"{path}: not a readable Parquet file: {error}") from error
    columns = set(table.column_names)
    if "image_sha256" not in columns:
        raise ManifestError(f"{path}: missing column 'image_sha256' (has {sorted(columns)})")
    text_column = "caption" if "caption" in columns else "prompt" if "prompt" in columns else None
    if text_column is None:
        raise ManifestError(f"{path}: needs a 'caption' or 'prompt' column (has {sorted(columns)})")
    data = table.to_pydict()
    count = table.num_rows
    rows = []
    for i in range(count):
        row_split = data["split"][i] if "split" in columns else None
        if split is not None and row_split is not None and row_split != split:
            continue
        sha = data["image_sha256"][i]
        if not isinstance(sha, str) or not sha:
            raise ManifestError(f"{path}: row {i} has an empty image_sha256")
        weight = data["weight"][i] if "weight" in columns else 1.0
        label = data["label"][i] if "label" in columns else None
        rows.append(
            ManifestRow(
                image_sha256=sha,
                caption=data[text_column][i] or "",
                label=None if label is None else str(label),
                weight=1.0 if weight is None else float(weight),
                split=row_split,
                image_path=data["image_path"][i] if "image_path" in columns else None,
            )
        )
    if not rows:
        raise ManifestError(f"{path}: no rows" + (f" in split {split!r}" if split else ""))
    return rows


def write_manifest(path: str | Path, rows: list[dict[str, Any]]) -> str:
    """Write rows as a Parquet manifest and return its sha256 (used by tests, demo and bench)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return file_sha256(path)


def open_image(source: ImageSource) -> Image.Image:
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, bytes):
        image = Image.open(io.BytesIO(source))
    else:
        image = Image.open(source)
    image.load()
    return image


@dataclass(frozen=True)
class ImageOptions:
    """How an image becomes a training square: `fit` "center_crop" (shorter side to R, centre
    cut) or "pad" (whole image scaled into R x R, the rest filled with `background`, nothing
    lost); alpha is composited on `background`; `flip` mirrors it left-right."""

    fit: str = "center_crop"
    background: tuple[int, int, int] = TRAINING_BACKGROUND

    def cache_key(self) -> str:
        """What changes a latent besides the VAE, resolution and image: part of the cache path."""
        colour = "".join(f"{c:02x}" for c in self.background)
        return f"{self.fit}-{colour}"


def load_image(
    source: ImageSource,
    resolution: int,
    options: ImageOptions | None = None,
    *,
    flip: bool = False,
) -> tuple[torch.Tensor, Geometry]:
    """[3, R, R] float tensor in [-1, 1] and its Geometry: the source's size, the crop's
    top-left in resized pixels (negative = padding), the target size (what SDXL's time_ids say
    about the image)."""
    options = options or ImageOptions()
    image = open_image(source)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*options.background, 255))
        image = Image.alpha_composite(canvas, rgba)
    image = image.convert("RGB")
    if flip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    width, height = image.size
    if options.fit == "pad":
        scale = resolution / max(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        if size != image.size:
            image = image.resize(size, Image.Resampling.BICUBIC)
        square = Image.new("RGB", (resolution, resolution), options.background)
        left, top = (resolution - image.width) // 2, (resolution - image.height) // 2
        square.paste(image, (left, top))
        image, crop = square, (-top, -left)
    else:
        scale = resolution / min(width, height)
        size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
        if size != image.size:
            image = image.resize(size, Image.Resampling.BICUBIC)
        left = (image.width - resolution) // 2
        top = (image.height - resolution) // 2
        image = image.crop((left, top, left + resolution, top + resolution))
        crop = (top, left)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    geometry = Geometry((height, width), crop, (resolution, resolution))
    return torch.from_numpy(array).permute(2, 0, 1).contiguous(), geometry


def load_pixels(source: ImageSource, resolution: int) -> torch.Tensor:
    """The pixels of `load_image`."""
    return load_image(source, resolution)[0]


class ImageCaptionDataset(torch.utils.data.Dataset):
    """(pixels, caption) per manifest row; images come from the resolver or `image_path`."""

    def __init__(
        self,
        rows: list[ManifestRow],
        resolution: int,
        resolver: Resolver | None = None,
        image_root: str | Path | None = None,
        options: ImageOptions | None = None,
    ) -> None:
        self.rows = rows
        self.resolution = resolution
        self.options = options or ImageOptions()
        self.resolver = resolver
        self.image_root = Path(image_root) if image_root else None

    @classmethod
    def from_manifest(
        cls,
        path: str | Path,
        expected_sha256: str | None,
        resolution: int,
        *,
        split: str | None = None,
        resolver: Resolver | None = None,
        image_root: str | Path | None = None,
        options: ImageOptions | None = None,
    ) -> ImageCaptionDataset:
        rows = read_manifest(path, expected_sha256, split)
        return cls(rows, resolution, resolver, image_root or Path(path).parent, options)

    def __len__(self) -> int:
        return len(self.rows)

    def source(self, row: ManifestRow) -> ImageSource:
        if self.resolver is not None:
            return self.resolver(row)
        if not row.image_path:
            raise ImageLoadError(
                f"image {row.image_sha256}: the manifest has no image_path and no resolver was given"
            )
        path = Path(row.image_path)
        if not path.is_absolute() and self.image_root is not None:
            path = self.image_root / path
        return path

    def load(self, index: int, *, flip: bool = False) -> tuple[torch.Tensor, str, Geometry]:
        """(pixels, caption, geometry) of row `index`; ImageLoadError names a bad sample."""
        row = self.rows[index]
        try:
            pixels, geometry = load_image(
                self.source(row), self.resolution, self.options, flip=flip
            )
        except ImageLoadError:
            raise
        except Exception as error:
            where = row.image_path or "via resolver"
            raise ImageLoadError(f"image {row.image_sha256} ({where}): {error}") from error
        return pixels, row.caption, geometry

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        pixels, caption, _ = self.load(index)
        return pixels, caption


class EpochBatchOrder:
    """Endless sample order: a fresh permutation per epoch, fixed by (seed, epoch).

    The state is two integers, so a checkpoint can store exactly where a run stopped reading.
    """

    def __init__(self, size: int, seed: int) -> None:
        if size <= 0:
            raise ValueError("EpochBatchOrder needs at least one sample")
        self.size, self.seed = size, seed
        self.epoch, self.cursor = 0, 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % (2**63))
        return torch.randperm(self.size, generator=generator).tolist()

    def take(self, count: int) -> list[int]:
        taken: list[int] = []
        while len(taken) < count:
            if self.cursor == self.size:
                self.epoch, self.cursor = self.epoch + 1, 0
                self._order = self._permutation(self.epoch)
            taken.append(self._order[self.cursor])
            self.cursor += 1
        return taken

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "cursor": self.cursor, "size": self.size, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["size"] != self.size or state["seed"] != self.seed:
            raise ValueError(
                f"data position is for {state['size']} samples / seed {state['seed']}, "
                f"this dataset has {self.size} samples / seed {self.seed}"
            )
        self.epoch, self.cursor = state["epoch"], state["cursor"]
        self._order = self._permutation(self.epoch)


# ---- latents -------------------------------------------------------------------------------------


def module_checksum(module: torch.nn.Module) -> str:
    """sha256 over parameter names and bytes: identifies the exact VAE a cached latent came from."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@torch.no_grad()
def encode_latent_parameters(vae: Any, pixels: torch.Tensor) -> torch.Tensor:
    """Mean and log-variance of the VAE posterior, [B, 2C, h, w]: deterministic, so cacheable."""
    return vae.encode(pixels).latent_dist.parameters


def sample_latents(
    parameters: torch.Tensor,
    scaling_factor: float,
    generator: torch.Generator | None,
    shift_factor: float = 0.0,
) -> torch.Tensor:
    """Draw from the cached posterior the way diffusers' `latent_dist.sample()` does, then
    normalise as the family's pipeline does ((z - shift) * scale; shift is 0 before SD3)."""
    mean, logvar = torch.chunk(parameters.float(), 2, dim=1)
    std = torch.exp(0.5 * torch.clamp(logvar, -30.0, 20.0))
    noise = torch.randn(
        mean.shape, generator=generator, device=generator.device if generator else mean.device
    ).to(mean.device)
    return (mean + std * noise - shift_factor) * scaling_factor


class LatentCache:
    """VAE posterior parameters and the image's Geometry on disk, one safetensors file per
    (VAE checksum, resolution, image)."""

    def __init__(
        self, root: str | Path, vae_checksum: str, resolution: int, variant: str = ""
    ) -> None:
        # Everything that changes a latent is in the path: VAE, resolution, fit and background
        # (`variant`), and per file the flip, so a changed option never reads a stale latent.
        folder = f"r{resolution}" + (f"-{variant}" if variant else "")
        self.directory = Path(root) / vae_checksum[:16] / folder
        self.hits = 0
        self.misses = 0

    def path(self, image_sha256: str, flip: bool = False) -> Path:
        name = f"{image_sha256}-flip" if flip else image_sha256
        return self.directory / image_sha256[:2] / f"{name}.safetensors"

    def get(self, image_sha256: str, flip: bool = False) -> tuple[torch.Tensor, Geometry] | None:
        from safetensors.torch import load_file

        path = self.path(image_sha256, flip)
        if not path.is_file():
            self.misses += 1
            return None
        try:
            tensors = load_file(path)
            parameters, geometry = (
                tensors["parameters"],
                Geometry.from_list(tensors["geometry"].tolist()),
            )
        except Exception as error:  # a torn, corrupt or older-format file is re-encoded
            logger.warning("latent cache: unusable %s (%s); re-encoding", path, error)
            self.misses += 1
            return None
        self.hits += 1
        return parameters, geometry

    def put(
        self, image_sha256: str, parameters: torch.Tensor, geometry: Geometry, flip: bool = False
    ) -> None:
        from safetensors.torch import save_file

        path = self.path(image_sha256, flip)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        tensors = {
            "parameters": parameters.detach().cpu().contiguous(),
            "geometry": torch.tensor(geometry.as_list(), dtype=torch.int64),
        }
        save_file(tensors, temporary)
        os.replace(temporary, path)  # atomic: concurrent runs never read half a file
