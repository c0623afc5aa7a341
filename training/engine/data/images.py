"""From a manifest row to training pixels: opening, alpha, fitting to the training size."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from training.engine.data.buckets import Size, bucket_sizes, nearest_bucket, plan_fit
from training.engine.data.manifest import ManifestRow, read_manifest
from training.engine.families.base import Geometry

# A resolver turns a manifest row into something Pillow can open: a path, raw bytes or an Image.
ImageSource = str | Path | bytes | Image.Image
Resolver = Callable[[ManifestRow], ImageSource]

# Alpha is composited on white: stickers are designed to sit on light backgrounds.
TRAINING_BACKGROUND = (255, 255, 255)


class ImageLoadError(OSError):
    """One sample's image could not be opened; names the sample so the bad file can be found."""


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
    """How an image becomes a training image: `fit` "center_crop" (shorter side to R, centre
    cut), "pad" (whole image scaled into R x R, the rest filled with `background`, nothing lost)
    or "bucket" (the aspect-ratio bucket nearest the image, `buckets.py`); alpha is composited
    on `background`."""

    fit: str = "center_crop"
    background: tuple[int, int, int] = TRAINING_BACKGROUND
    bucket_step: int = 64
    bucket_max_aspect: float = 2.0

    def cache_key(self) -> str:
        """What changes a latent besides the VAE, resolution and image: part of the cache path."""
        colour = "".join(f"{c:02x}" for c in self.background)
        fit = self.fit
        if fit == "bucket":
            fit = f"bucket{self.bucket_step}x{self.bucket_max_aspect:g}"
        return f"{fit}-{colour}"

    def target(self, width: int, height: int, resolution: int) -> Size:
        """The (width, height) an image of this size trains at."""
        if self.fit != "bucket":
            return (resolution, resolution)
        sizes = bucket_sizes(resolution, self.bucket_step, self.bucket_max_aspect)
        return nearest_bucket(width, height, sizes)


def load_image(
    source: ImageSource,
    resolution: int,
    options: ImageOptions | None = None,
    *,
    flip: bool = False,
) -> tuple[torch.Tensor, Geometry]:
    """[3, H, W] float tensor in [-1, 1] (H = W = R unless bucketed) and its Geometry: the
    source's size, the crop's top-left in resized pixels (negative = padding), the target size
    (what SDXL's time_ids say about the image)."""
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
    target = options.target(width, height, resolution)
    plan = plan_fit(width, height, target, options.fit)
    if plan.resized != image.size:
        image = image.resize(plan.resized, Image.Resampling.BICUBIC)
    top, left = plan.offset
    if options.fit == "center_crop":
        image = image.crop((left, top, left + target[0], top + target[1]))
    else:
        canvas_rgb = Image.new("RGB", target, options.background)
        canvas_rgb.paste(image, (-left, -top))
        image = canvas_rgb
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    geometry = Geometry((height, width), plan.offset, (target[1], target[0]))
    return torch.from_numpy(array).permute(2, 0, 1).contiguous(), geometry


def image_size(source: ImageSource) -> Size:
    """(width, height) from the file's header, without decoding the pixels."""
    if isinstance(source, Image.Image):
        return source.size
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        return image.size


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

    def fallbacks(self, index: int) -> list[int]:
        """Rows to try, in order, when row `index` cannot be read: the rest of its bucket, so a
        replacement still stacks with the batch."""
        for members in self.buckets()[0].values():
            if index in members:
                at = members.index(index)
                return members[at:] + members[:at]
        return [index]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        pixels, caption, _ = self.load(index)
        return pixels, caption
