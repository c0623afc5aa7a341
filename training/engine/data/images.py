"""From a manifest row to training pixels: opening, alpha, fitting to the training size."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageOps

from training.engine.data.buckets import FitPlan, Size, bucket_sizes, nearest_bucket, plan_fit
from training.engine.data.manifest import ManifestRow, read_manifest
from training.engine.families.base import Geometry

# A resolver turns a manifest row into something Pillow can open: a path, raw bytes or an Image.
ImageSource = str | Path | bytes | Image.Image
Resolver = Callable[[ManifestRow], ImageSource]

# Alpha is composited on white: stickers are designed to sit on light backgrounds.
TRAINING_BACKGROUND = (255, 255, 255)


class ImageLoadError(OSError):
    """One sample's image could not be opened; names the sample so the bad file can be found."""


# EXIF orientations that swap width and height (rotated by 90 or 270 degrees, or transposed).
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})
_ORIENTATION = 0x0112


def open_image(source: ImageSource) -> Image.Image:
    """The image upright, as the platform's grid, features and CLIP embeddings see it: a
    camera photo's EXIF orientation is applied (a caller's own Image is never modified)."""
    if isinstance(source, Image.Image):
        image = source
        if image.getexif().get(_ORIENTATION, 1) != 1:
            image = ImageOps.exif_transpose(image)
        image.load()
        return image
    image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    image.load()
    ImageOps.exif_transpose(image, in_place=True)
    return image


@dataclass(frozen=True)
class ImageOptions:
    """How an image becomes a training image: `fit` "center_crop" (shorter side to R, centre
    cut), "pad" (whole image scaled into R x R, the rest filled with `background`, nothing lost)
    or "bucket" (the aspect-ratio bucket nearest the image, `buckets.py`); alpha is composited
    on `background`."""

    fit: str = "center_crop"
    background: tuple[int, int, int] = TRAINING_BACKGROUND
    bucket_step: int = 64
    bucket_max_aspect: float = 2.0
    alpha_mode: str = "composite"

    def cache_key(self) -> str:
        """What changes a latent besides the VAE, resolution and image: part of the cache path."""
        colour = "".join(f"{c:02x}" for c in self.background)
        fit = self.fit
        if fit == "bucket":
            fit = f"bucket{self.bucket_step}x{self.bucket_max_aspect:g}"
        alpha = "-alphamask" if self.alpha_mode == "loss_mask" else ""
        return f"{fit}-{colour}{alpha}"

    def target(self, width: int, height: int, resolution: int) -> Size:
        """The (width, height) an image of this size trains at."""
        if self.fit != "bucket":
            return (resolution, resolution)
        sizes = bucket_sizes(resolution, self.bucket_step, self.bucket_max_aspect)
        return nearest_bucket(width, height, sizes)


class LoadedImage(NamedTuple):
    """[3, H, W] pixels in [-1, 1] (H = W = R unless bucketed); the Geometry (the source's
    size, the crop's top-left in resized pixels, negative = padding, the target size: what
    SDXL's time_ids say about the image); with alpha_mode "loss_mask", the [1, H, W] alpha in
    [0, 1] after the same fit (0 on padding, 1 where an image has no alpha)."""

    pixels: torch.Tensor
    geometry: Geometry
    mask: torch.Tensor | None = None


def load_image(
    source: ImageSource,
    resolution: int,
    options: ImageOptions | None = None,
    *,
    flip: bool = False,
) -> LoadedImage:
    options = options or ImageOptions()
    image = open_image(source)
    alpha = None
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        alpha = rgba.getchannel("A")
        canvas = Image.new("RGBA", rgba.size, (*options.background, 255))
        image = Image.alpha_composite(canvas, rgba)
    image = image.convert("RGB")
    if options.alpha_mode == "loss_mask" and alpha is None:
        alpha = Image.new("L", image.size, 255)
    if options.alpha_mode != "loss_mask":
        alpha = None
    if flip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        alpha = alpha.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if alpha else None
    width, height = image.size
    target = options.target(width, height, resolution)
    plan = plan_fit(width, height, target, options.fit)
    image = _fit(image, plan, options.fit, options.background)
    mask = None
    if alpha is not None:
        fitted = np.asarray(_fit(alpha, plan, options.fit, 0), dtype=np.float32) / 255.0
        mask = torch.from_numpy(fitted)[None].contiguous()
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    geometry = Geometry((height, width), plan.offset, (target[1], target[0]))
    return LoadedImage(torch.from_numpy(array).permute(2, 0, 1).contiguous(), geometry, mask)


def _fit(
    image: Image.Image, plan: FitPlan, fit: str, background: tuple[int, int, int] | int
) -> Image.Image:
    if plan.resized != image.size:
        image = image.resize(plan.resized, Image.Resampling.BICUBIC)
    top, left = plan.offset
    target = plan.target
    if fit == "center_crop":
        return image.crop((left, top, left + target[0], top + target[1]))
    canvas = Image.new(image.mode, target, background)
    canvas.paste(image, (-left, -top))
    return canvas


def image_size(source: ImageSource) -> Size:
    """(width, height) upright, as `open_image` returns it, from the header without decoding."""
    if isinstance(source, Image.Image):
        return _upright_size(source)
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        return _upright_size(image)


def _upright_size(image: Image.Image) -> Size:
    width, height = image.size
    if image.getexif().get(_ORIENTATION, 1) in _SWAPPING_ORIENTATIONS:
        return height, width
    return width, height


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
        self._buckets: tuple[dict[Size, list[int]], dict[int, str]] | None = None
        self._positions: dict[int, tuple[list[int], int]] | None = None

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

    def load(self, index: int, *, flip: bool = False) -> LoadedImage:
        """The image of row `index`; ImageLoadError names a bad sample."""
        row = self.rows[index]
        try:
            loaded = load_image(self.source(row), self.resolution, self.options, flip=flip)
        except ImageLoadError:
            raise
        except Exception as error:
            where = row.image_path or "via resolver"
            raise ImageLoadError(f"image {row.image_sha256} ({where}): {error}") from error
        return loaded

    def buckets(self) -> tuple[dict[Size, list[int]], dict[int, str]]:
        """Row indices per training size (width, height), and the rows whose image could not be
        read -> why. One size unless `fit` is "bucket", which reads every image's header once."""
        if self._buckets is None:
            if self.options.fit != "bucket":
                square = (self.resolution, self.resolution)
                self._buckets = ({square: list(range(len(self.rows)))}, {})
            else:
                members: dict[Size, list[int]] = {}
                unreadable: dict[int, str] = {}
                for index, row in enumerate(self.rows):
                    try:
                        width, height = image_size(self.source(row))
                    except Exception as error:  # Pillow and resolvers raise many types
                        unreadable[index] = f"image {row.image_sha256}: {error}"
                        continue
                    target = self.options.target(width, height, self.resolution)
                    members.setdefault(target, []).append(index)
                self._buckets = (members, unreadable)
        return self._buckets

    def fallbacks(self, index: int) -> Iterator[int]:
        """Rows to try, in order, when row `index` cannot be read: the rest of its bucket, so a
        replacement still stacks with the batch."""
        if self._positions is None:
            self._positions = {
                row: (members, at)
                for members in self.buckets()[0].values()
                for at, row in enumerate(members)
            }
        if index not in self._positions:
            yield index
            return
        members, at = self._positions[index]
        for step in range(len(members)):
            yield members[(at + step) % len(members)]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        return self.load(index).pixels, self.rows[index].caption
