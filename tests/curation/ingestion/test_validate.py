"""validate_image_bytes on real files made with Pillow: every kind of bad input gets its reason."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from curation.ingestion.validate import (
    RefusedFile,
    ValidatedImage,
    validate_image_bytes,
    validate_path,
)
from tests.curation.ingestion.factories import (
    encode,
    photo,
    photo_jpeg,
    png_claiming_size,
    sticker_rgba,
)


def ok(data: bytes, **options: object) -> ValidatedImage:
    result = validate_image_bytes(data, "test", **options)  # type: ignore[arg-type]
    assert isinstance(result, ValidatedImage), result
    return result


def refused(data: bytes, **options: object) -> str:
    result = validate_image_bytes(data, "test", **options)  # type: ignore[arg-type]
    assert isinstance(result, RefusedFile), result
    return result.reason


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_plain_jpeg_is_stored_byte_for_byte_and_addressed_by_its_original_sha256():
    data = photo_jpeg(1)
    image = ok(data)
    assert image.data == data
    assert image.sha256 == image.stored_sha256 == hashlib.sha256(data).hexdigest()
    assert (image.width, image.height, image.mode, image.stored_format) == (256, 192, "RGB", "JPEG")
    assert image.has_alpha is False and image.frame_count == 1
    assert len(image.phash) == 16 and int(image.phash, 16) >= 0


def test_truncated_and_corrupt_files_are_refused_with_the_format_named():
    jpeg = photo_jpeg(2)
    assert refused(jpeg[: len(jpeg) // 2]).startswith("truncated JPEG")
    png = encode(photo(2), "PNG")
    assert refused(png[: len(png) // 2]).startswith("truncated PNG")
    idat = png.index(b"IDAT") + 40
    damaged = png[:idat] + bytes([png[idat] ^ 0xFF]) + png[idat + 1 :]
    assert "PNG" in refused(damaged)


def test_files_that_are_not_images_say_what_they_look_like():
    assert refused(b"") == "empty file (0 bytes)"
    assert refused(b"just some notes\n") == "not an image: plain text"
    assert refused(b"%PDF-1.7 ...") == "not an image: a PDF document"
    assert refused(bytes(range(200, 256))).startswith("not an image: unrecognised format")
    ppm = encode(photo(3, (16, 16)), "PPM")
    assert refused(ppm).startswith("PPM images are not accepted")


def test_a_decompression_bomb_is_refused_before_decoding():
    bomb = png_claiming_size(30000, 30000)
    assert len(bomb) < 200
    reason = refused(bomb)
    assert reason.startswith("image is 30000x30000 = 900 Mpx, above the 89 Mpx limit")


def test_the_pixel_limit_is_per_call_and_leaves_pillow_global_alone():
    before = Image.MAX_IMAGE_PIXELS
    data = encode(photo(4, (100, 100)), "PNG")
    assert "above the 0.005 Mpx limit" in refused(data, max_pixels=5000)
    assert ok(data, max_pixels=10_000).width == 100
    assert before == Image.MAX_IMAGE_PIXELS


def test_files_above_the_byte_limit_are_refused():
    assert "per-file limit" in refused(photo_jpeg(5), max_bytes=100)


def test_cmyk_jpeg_becomes_rgb_with_its_colours():
    red = Image.new("CMYK", (64, 48), (0, 255, 255, 0))
    image = ok(encode(red, "JPEG", quality=95))
    assert (image.mode, image.source_mode) == ("RGB", "CMYK")
    r, g, b = pixels(image.data)[24, 32]
    assert r > 230 and g < 30 and b < 30


def test_16_bit_png_is_scaled_not_clipped():
    deep = Image.new("I;16", (4, 1))
    deep.putdata([0, 256, 32768, 65535])
    image = ok(encode(deep, "PNG"))
    assert (image.mode, image.source_mode, image.stored_format) == ("RGB", "I;16", "PNG")
    assert pixels(image.data)[0, :, 0].tolist() == [0, 1, 128, 255]


def test_palette_transparency_becomes_real_alpha_only_when_used():
    palette = Image.new("P", (32, 32), 1)
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.paste(0, (0, 0, 16, 32))  # left half uses the transparent index
    image = ok(encode(palette, "PNG", transparency=0))
    assert (image.mode, image.has_alpha, image.stored_format) == ("RGBA", True, "PNG")
    stored = pixels(image.data)
    assert stored[5, 5, 3] == 0 and stored[5, 25].tolist() == [0, 0, 255, 255]

    opaque = Image.new("P", (32, 32), 1)
    opaque.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    assert ok(encode(opaque, "PNG", transparency=0)).has_alpha is False


def test_la_and_rgba_keep_alpha_bit_exactly():
    source = sticker_rgba(seed=7)
    image = ok(encode(source, "PNG"))
    assert (image.mode, image.has_alpha, image.stored_format) == ("RGBA", True, "PNG")
    assert np.array_equal(pixels(image.data), np.asarray(source))

    gray_alpha = source.convert("LA")
    la = ok(encode(gray_alpha, "PNG"))
    assert la.mode == "RGBA" and la.has_alpha
    assert np.array_equal(pixels(la.data)[..., 3], np.asarray(gray_alpha)[..., 1])

    webp = ok(encode(source, "WEBP", lossless=True))
    assert webp.has_alpha and np.array_equal(pixels(webp.data)[..., 3], np.asarray(source)[..., 3])


def test_opaque_rgba_is_not_reported_as_having_alpha():
    opaque = photo(8, (40, 30)).convert("RGBA")
    image = ok(encode(opaque, "PNG"))
    assert (image.mode, image.has_alpha) == ("RGB", False)
    assert np.array_equal(pixels(image.data), np.asarray(opaque)[..., :3])


def test_exif_orientation_is_applied():
    wide = Image.new("RGB", (200, 100), (255, 0, 0))
    wide.paste((0, 0, 255), (100, 0, 200, 100))  # stored: red left, blue right
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    image = ok(encode(wide, "JPEG", quality=95, exif=exif.tobytes()))
    assert (image.width, image.height) == (100, 200)
    shown = pixels(image.data)
    assert shown.shape == (200, 100, 3)
    assert shown[20, 50, 0] > 200 and shown[20, 50, 2] < 50  # red is now on top
    assert shown[180, 50, 2] > 200 and shown[180, 50, 0] < 50  # blue at the bottom
    assert image.stored_format == "JPEG" and image.stored_sha256 != image.sha256


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_a_re_encoded_copy_keeps_the_rgb_colour_profile_and_drops_the_exif(fmt):
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112] = 6  # the rotation forces a re-encode
    exif[0x010F] = "CameraMaker"
    source = encode(photo(0), fmt, exif=exif.tobytes(), icc_profile=icc)
    image = ok(source)
    assert image.stored_sha256 != image.sha256  # not passed through
    stored = Image.open(io.BytesIO(image.data))
    assert stored.info.get("icc_profile") == icc
    assert not stored.getexif()


def test_a_non_rgb_profile_is_not_put_on_the_rgb_copy_of_a_grey_image():
    from PIL import ImageCms

    lab_icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    assert lab_icc[16:20] != b"RGB "
    exif = Image.Exif()
    exif[0x0112] = 3
    image = ok(
        encode(Image.new("L", (64, 64), 90), "PNG", exif=exif.tobytes(), icc_profile=lab_icc)
    )
    assert "icc_profile" not in Image.open(io.BytesIO(image.data)).info


def test_animated_gif_keeps_the_first_frame_and_counts_frames():
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = [Image.new("RGB", (24, 24), c) for c in colours]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    image = ok(data)
    assert image.frame_count == 3
    assert pixels(image.data)[12, 12].tolist() == [255, 0, 0]


def test_validate_path_reads_files_and_refuses_missing_ones(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(encode(sticker_rgba(), "PNG"))
    assert isinstance(validate_path(path), ValidatedImage)
    missing = validate_path(tmp_path / "nope.png")
    assert isinstance(missing, RefusedFile) and missing.reason.startswith("cannot read file")


SVG_NS = 'xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"'


@pytest.fixture
def cairosvg_available():
    pytest.importorskip("cairosvg")


def test_plain_svg_is_rasterised_with_transparency(cairosvg_available):
    svg = f'<svg {SVG_NS} width="40" height="20"><rect x="0" y="0" width="20" height="20" fill="#f00"/></svg>'
    image = ok(svg.encode())
    assert (image.source_format, image.stored_format, image.mode) == ("SVG", "PNG", "RGBA")
    assert (image.width, image.height) == (512, 256)  # scaled up to svg_min_side
    shown = pixels(image.data)
    assert shown[128, 100].tolist() == [255, 0, 0, 255] and shown[128, 400, 3] == 0
    assert image.has_alpha


@pytest.mark.parametrize(
    ("svg", "reason"),
    [
        (
            '<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            f'<svg {SVG_NS} width="9" height="9"><text>&x;</text></svg>',
            "SVG refused: it declares a DOCTYPE",
        ),
        (
            f'<svg {SVG_NS} width="9" height="9"><image xlink:href="http://127.0.0.1/x.png" '
            'width="9" height="9"/></svg>',
            "SVG refused: it references an external resource (http://127.0.0.1/x.png)",
        ),
        (
            f'<svg {SVG_NS} width="9" height="9"><image href="file:///etc/hosts" width="9"/></svg>',
            "SVG refused: it references an external resource (file:///etc/hosts)",
        ),
        (
            f'<svg {SVG_NS} width="9" height="9"><style>@import url(http://x/a.css);</style></svg>',
            "SVG refused: its stylesheet uses @import",
        ),
        (
            f'<svg {SVG_NS} width="9" height="9"><rect fill="url(http://x/p.svg#g)"/></svg>',
            "SVG refused: it references an external resource",
        ),
        (f'<svg {SVG_NS}><rect width="5" height="5"/></svg>', "SVG has no usable size"),
        (f'<svg {SVG_NS} width="9" height="9"><rect></svg>', "corrupt SVG: not well-formed XML"),
        (
            f'<svg {SVG_NS} width="100000" height="100000"><rect width="5" height="5"/></svg>',
            "image is 100000x100000 = 10000 Mpx, above the 89 Mpx limit",
        ),
    ],
)
def test_unsafe_or_broken_svg_is_refused(cairosvg_available, svg, reason):
    assert refused(svg.encode()).startswith(reason)


def test_svg_with_an_embedded_data_image_renders_and_oversized_ones_are_refused(
    cairosvg_available,
):
    import base64

    small = base64.b64encode(encode(Image.new("RGB", (8, 8), (0, 255, 0)), "PNG")).decode()
    svg = (
        f'<svg {SVG_NS} width="8" height="8"><image width="8" height="8" '
        f'xlink:href="data:image/png;base64,{small}"/></svg>'
    )
    assert ok(svg.encode()).width == 512
    big = base64.b64encode(encode(Image.new("1", (3000, 3000)), "PNG")).decode()
    svg = svg.replace(small, big)
    assert "embedded image is 3000x3000" in refused(svg.encode(), max_pixels=1_000_000)


def test_no_perceptual_hash_below_the_minimum_side():
    from curation.ingestion.validate import PHASH_MIN_SIDE

    assert ok(encode(photo(1, (PHASH_MIN_SIDE - 1, 200)), "PNG")).phash == ""
    assert len(ok(encode(photo(1, (PHASH_MIN_SIDE, 200)), "PNG")).phash) == 16
