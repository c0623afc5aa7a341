"""Validate one file's bytes as an image and normalise it into what the platform stores.

Rules a person can rely on (and tests assert):

- Content address: `ValidatedImage.sha256` is the sha256 of the *original* bytes, so the same file
  ingested twice is an exact duplicate however we re-encode it. `stored_sha256` is the sha256 of
  `data` (the bytes we store) and lets storage be checked for corruption.
- Pixel limit: the size in the header is checked before any pixel is decoded; above `max_pixels`
  the file is refused ("image is 30000x30000 = 900 Mpx, above the 89 Mpx limit"). Pillow's global
  `Image.MAX_IMAGE_PIXELS` is never modified (threads share it); its own bomb error is caught and
  reported the same way.
- Modes: CMYK (through its ICC profile when it has one), 16-bit, palette, LA, 1-bit, YCbCr … become
  RGB, or RGBA when there is transparency. Alpha is kept only when it is real (some pixel < 255):
  an opaque RGBA file is stored as RGB and `has_alpha` is False.
- EXIF orientation is applied, so `width`/`height` are as a person sees the image.
- Animated images (GIF, APNG, WebP, multi-page TIFF): the first frame is kept and `frame_count`
  records how many there were.
- Stored bytes carry no metadata (EXIF with GPS, XMP, IPTC, comments, text chunks): they are
  served to annotators. The original file is kept, metadata stripped byte-wise
  (`metadata.strip_metadata`, pixels untouched), when it already decodes to exactly the
  normalised pixels (an upright 8-bit RGB JPEG, an RGB/RGBA PNG …); `original` then holds the
  file as supplied if stripping changed it, so training can still ask for it. Otherwise
  anything with alpha or from a lossless source is written as PNG (alpha bit-exact, never
  flattened); an RGB image from a lossy source (JPEG, lossy WebP, AVIF) that had to be rotated
  or converted is written as JPEG at `lossy_quality` with 4:4:4 chroma (pass `lossy_quality=None` for PNG instead).
- SVG is refused unless self-contained, then rasterised (curation.ingestion.svg).
- The perceptual hash is imagehash.phash of the image composited on white (as CLIP sees it).
  Below `PHASH_MIN_SIDE` pixels on the shorter side there is none (`phash` is ""): phash
  resamples to 32x32 before its DCT, so a smaller image's hash describes the interpolation
  more than the picture and unrelated tiny images collide. Such images are still deduplicated
  exactly, by sha256, but never as near-duplicates.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image, ImageCms, ImageFile, ImageOps, UnidentifiedImageError

from curation.ingestion.metadata import strip_metadata
from curation.ingestion.pixels import Refused, bomb_reason, check_pixels
from curation.ingestion.svg import looks_like_svg, rasterise_svg

# Pillow's own default, as a constant: reading Image.MAX_IMAGE_PIXELS would follow whatever
# another library set it to.
DEFAULT_MAX_PIXELS = 89_478_485
DEFAULT_MAX_BYTES = 100 * 1024 * 1024
DEFAULT_SVG_MIN_SIDE = 512
DEFAULT_LOSSY_QUALITY = 95
PHASH_MIN_SIDE = 32

# Formats a pool of stickers, icons and photos arrives in. EPS would run Ghostscript and PSD,
# FITS, … are not images people share; they are refused by name.
_WANTED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "ICO", "AVIF")
Image.init()
ACCEPTED_FORMATS: tuple[str, ...] = tuple(f for f in _WANTED_FORMATS if f in Image.OPEN)

_LOSSY_FORMATS = {"JPEG", "MPO", "AVIF"}
_PASS_THROUGH_FORMATS = {"JPEG", "PNG", "WEBP"}
_PHASH_BACKGROUND = (255, 255, 255)
_PHASH_REDUCE_TO = 128
_ORIENTATION_TAG = 0x0112


@dataclass(frozen=True)
class RefusedFile:
    """A file that was not ingested and why, worded for the person who supplied it."""

    origin: str
    reason: str
    sha256: str | None = None


@dataclass(frozen=True)
class ValidatedImage:
    """A decoded, normalised image ready to store; `data` decodes to exactly `mode` pixels."""

    origin: str
    sha256: str
    stored_sha256: str
    data: bytes = field(repr=False)
    stored_format: str
    source_format: str
    width: int
    height: int
    mode: str
    source_mode: str
    has_alpha: bool
    frame_count: int
    phash: str  # "" below PHASH_MIN_SIDE: no near-duplicate detection for this image
    source_bytes: int
    # The file as supplied when `data` is that file with its metadata stripped.
    original: bytes | None = field(default=None, repr=False)

    @property
    def extension(self) -> str:
        return {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}[self.stored_format]

    def open(self) -> Image.Image:
        image = Image.open(io.BytesIO(self.data))
        image.load()
        return image


def validate_path(path: str | Path, **options: object) -> ValidatedImage | RefusedFile:
    """Validate a local file; the entry point benchmarks and one-off scripts call."""
    origin = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return RefusedFile(origin, f"cannot read file: {exc.strerror or exc}")
    return validate_image_bytes(data, origin, **options)  # type: ignore[arg-type]


def validate_image_bytes(
    data: bytes,
    origin: str,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    svg_min_side: int = DEFAULT_SVG_MIN_SIDE,
    lossy_quality: int | None = DEFAULT_LOSSY_QUALITY,
    png_compress_level: int = 6,
    sha256: str | None = None,
) -> ValidatedImage | RefusedFile:
    """Return the normalised image, or a RefusedFile whose reason a person understands. Never raises
    for bad input: a batch must go on past any one file. `sha256` may pass in the digest of
    `data` when the caller has already computed it."""
    if not data:
        return RefusedFile(origin, "empty file (0 bytes)")
    if len(data) > max_bytes:
        return RefusedFile(
            origin, f"file is {_mb(len(data))}, above the {_mb(max_bytes)} per-file limit"
        )
    sha256 = sha256 or hashlib.sha256(data).hexdigest()
    try:
        if looks_like_svg(data):
            rendered = rasterise_svg(data, max_pixels=max_pixels, min_side=svg_min_side)
            decoded = _Decoded(_normalise_mode(rendered), "SVG", "vector", 1, False, False)
        else:
            decoded = _decode_raster(data, max_pixels=max_pixels)
    except Refused as refused:
        return RefusedFile(origin, str(refused), sha256)
    except Exception as exc:  # a hostile file may trip anything inside a decoder
        return RefusedFile(origin, f"could not decode image: {type(exc).__name__}: {exc}", sha256)
    return _finish(
        decoded,
        data,
        origin,
        sha256,
        lossy_quality=lossy_quality,
        png_compress_level=png_compress_level,
    )


@dataclass
class _Decoded:
    image: Image.Image  # RGB or RGBA, oriented, alpha only when real
    source_format: str
    source_mode: str
    frame_count: int
    lossy_source: bool
    pass_through: bool  # the original bytes decode to exactly `image`
    icc_profile: bytes | None = None  # the source's RGB profile, still true of `image`'s pixels


def _decode_raster(data: bytes, *, max_pixels: int) -> _Decoded:
    image = _open(data, max_pixels)
    fmt = image.format or "unknown"
    width, height = image.size
    if width <= 0 or height <= 0:
        raise Refused(f"{fmt} header gives an empty size {width}x{height}")
    check_pixels(width, height, max_pixels)
    try:
        image.verify()
    except Exception as exc:
        raise Refused(_decode_failure(fmt, exc)) from exc

    # verify() leaves the object unusable, so decode from a fresh parse.
    image = _open(data, max_pixels)
    frame_count = int(getattr(image, "n_frames", 1) or 1)
    try:
        image.load()
    except Exception as exc:
        raise Refused(_decode_failure(fmt, exc)) from exc
    source_mode = image.mode

    oriented = _apply_orientation(image)
    normalised = _normalise_mode(oriented)
    lossy = fmt in _LOSSY_FORMATS or (fmt == "WEBP" and data[12:16] != b"VP8L")
    pass_through = (
        fmt in _PASS_THROUGH_FORMATS
        and frame_count == 1
        and oriented is image
        and image.mode == normalised.mode
        and "transparency" not in image.info
    )
    return _Decoded(
        normalised, fmt, source_mode, frame_count, lossy, pass_through, _kept_icc(image, normalised)
    )


def _kept_icc(source: Image.Image, normalised: Image.Image) -> bytes | None:
    """The ICC profile a re-encoded copy must carry so its colours look as the source's did.

    Only an RGB profile on pixels that were not colour-converted: CMYK is converted to sRGB
    through its profile, and a grey profile would be wrong on the RGB copy of a grey image.
    """
    icc = source.info.get("icc_profile")
    if not icc or source.mode not in ("RGB", "RGBA", "P", "PA"):
        return None
    return icc if icc[16:20] == b"RGB " and normalised.mode in ("RGB", "RGBA") else None


def _open(data: bytes, max_pixels: int) -> ImageFile.ImageFile:
    try:
        return Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError as exc:
        size = _header_size(data)
        if size is not None:
            check_pixels(*size, min(max_pixels, _pillow_limit(str(exc))))
        raise Refused(bomb_reason(str(exc))) from exc
    except UnidentifiedImageError:
        pass
    except Exception as exc:
        raise Refused(_decode_failure(_sniff_format(data), exc)) from exc
    try:  # only to name what it is; opening reads the header and decodes nothing
        other = Image.open(io.BytesIO(data))
        name = other.format
        other.close()
    except Exception:
        name = None
    if name:
        accepted = ", ".join(ACCEPTED_FORMATS + ("SVG",))
        raise Refused(f"{name} images are not accepted (accepted formats: {accepted})")
    raise Refused(f"not an image: {_describe_unknown(data)}")


def _header_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the header alone, for the message when Pillow's own bomb check
    fired first: a plugin's constructor parses the header without that check."""
    for fmt in ACCEPTED_FORMATS:
        factory, accept = Image.OPEN[fmt]
        if accept is not None and not accept(data[:16]):
            continue
        try:
            return factory(io.BytesIO(data), "").size
        except Exception:
            continue
    return None


def _pillow_limit(message: str) -> int:
    numbers = [int(n) for n in re.findall(r"\d+", message)]
    return numbers[1] if len(numbers) >= 2 else DEFAULT_MAX_PIXELS


def _decode_failure(fmt: str, exc: BaseException) -> str:
    message = str(exc) or type(exc).__name__
    lowered = message.lower()
    if "truncated" in lowered or "broken data stream" in lowered or isinstance(exc, EOFError):
        return f"truncated {fmt} ({message})"
    return f"corrupt {fmt}: {message}"


def _sniff_format(data: bytes) -> str:
    """Name the format from magic bytes when Pillow fails before telling us."""
    if data.startswith(b"\xff\xd8"):
        return "JPEG"
    if data.startswith(b"\x89PNG"):
        return "PNG"
    if data.startswith(b"GIF8"):
        return "GIF"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "WEBP"
    return "image"


def _describe_unknown(data: bytes) -> str:
    head = data[:64]
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    signatures = (
        (b"%pdf", "a PDF document"),
        (b"pk\x03\x04", "a zip archive (archives are only opened when given as a path)"),
        (b"\x1f\x8b", "gzip-compressed data"),
        (b"<!doctype html", "an HTML page"),
        (b"<html", "an HTML page"),
        (b"<?xml", "an XML document that is not SVG"),
        (b"{", "JSON or other text"),
    )
    for signature, name in signatures:
        if stripped.startswith(signature):
            return name
    if _is_text(head):
        return "plain text"
    return f"unrecognised format (starts with {head[:8].hex(' ')})"


def _is_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(b >= 32 or b in b"\t\r\n" for b in head)


def _apply_orientation(image: Image.Image) -> Image.Image:
    """Return `image` itself when upright, so callers can tell nothing was rotated."""
    try:
        orientation = image.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # unreadable EXIF is not a reason to refuse pixels that decode
        return image
    if orientation not in range(2, 9):
        return image
    return ImageOps.exif_transpose(image)


def _normalise_mode(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        image = _to_8bit_gray(image)
        mode = "L"
    if mode == "CMYK":
        converted = _cmyk_to_rgb(image)
    elif mode == "RGBA":
        converted = image
    elif mode in ("LA", "La", "PA", "RGBa") or "transparency" in image.info:
        converted = image.convert("RGBA")
    elif mode == "RGB":
        converted = image
    else:
        converted = image.convert("RGB")
    if converted.mode == "RGBA" and converted.getchannel("A").getextrema()[0] == 255:
        converted = converted.convert("RGB")
    return converted


def _to_8bit_gray(image: Image.Image) -> Image.Image:
    """Scale 16-bit or float samples to 0..255; Pillow's convert('L') would clip them instead."""
    array = np.asarray(image, dtype=np.float64)
    peak = float(array.max()) if array.size else 0.0
    if image.mode == "F" and peak <= 1.0:
        scale = 255.0
    elif image.mode.startswith("I;16") or 255 < peak <= 65535:
        scale = 255.0 / 65535.0
    elif peak > 65535:
        scale = 255.0 / peak
    else:
        scale = 1.0
    scaled = np.clip(np.rint(array * scale), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, mode="L")


def _cmyk_to_rgb(image: Image.Image) -> Image.Image:
    icc = image.info.get("icc_profile")
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            converted = ImageCms.profileToProfile(
                image, source, ImageCms.createProfile("sRGB"), outputMode="RGB"
            )
            if converted is not None:
                return converted
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # a broken profile: fall back to Pillow's naive conversion
    return image.convert("RGB")


def _finish(
    decoded: _Decoded,
    data: bytes,
    origin: str,
    sha256: str,
    *,
    lossy_quality: int | None,
    png_compress_level: int,
) -> ValidatedImage:
    image = decoded.image
    original: bytes | None = None
    if decoded.pass_through:
        stored, stored_format = strip_metadata(data, decoded.source_format), decoded.source_format
        original = None if stored is data else data
    elif image.mode == "RGB" and decoded.lossy_source and lossy_quality is not None:
        buffer = io.BytesIO()
        # Explicitly empty: Pillow would carry a source comment over from image.info.
        image.save(
            buffer,
            "JPEG",
            quality=lossy_quality,
            subsampling=0,
            exif=b"",
            comment=b"",
            icc_profile=decoded.icc_profile,
        )
        stored, stored_format = buffer.getvalue(), "JPEG"
    else:
        buffer = io.BytesIO()
        image.save(
            buffer,
            "PNG",
            compress_level=png_compress_level,
            exif=b"",
            icc_profile=decoded.icc_profile,
        )
        stored, stored_format = buffer.getvalue(), "PNG"
    return ValidatedImage(
        origin=origin,
        sha256=sha256,
        stored_sha256=sha256 if stored is data else hashlib.sha256(stored).hexdigest(),
        data=stored,
        stored_format=stored_format,
        source_format=decoded.source_format,
        width=image.width,
        height=image.height,
        mode=image.mode,
        source_mode=decoded.source_mode,
        has_alpha=image.mode == "RGBA",
        frame_count=decoded.frame_count,
        phash=perceptual_hash(image) if min(image.size) >= PHASH_MIN_SIDE else "",
        source_bytes=len(data),
        original=original,
    )


def perceptual_hash(image: Image.Image) -> str:
    """imagehash.phash (64 bits, hex) of the image as seen on a white background.

    The grey image is first box-reduced by an integer factor to no less than 128 px, as Pillow's
    `reducing_gap` does: phash's Lanczos resize to 32 px otherwise costs as much as decoding a
    512 px JPEG. Hashes stay within a bit or two of phash on the full image.
    """
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, _PHASH_BACKGROUND)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        image = canvas
    gray = image.convert("L")
    factor = min(gray.size) // _PHASH_REDUCE_TO
    if factor >= 2:
        gray = gray.reduce(factor)
    return str(imagehash.phash(gray))


def _mb(size: int) -> str:
    return f"{size / 1_048_576:.1f} MiB" if size >= 1_048_576 else f"{size:,} bytes"
