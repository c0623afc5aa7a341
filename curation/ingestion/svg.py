"""SVG input: refused unless self-contained, then rasterised with cairosvg.

Before rendering, a defusedxml parse forbids DOCTYPE, entities and any reference outside the
document (href, CSS url(), @import); embedded data: rasters are size checked. Rendering uses the
intrinsic size, scaled up so the longer side is at least `min_side`, and is refused above the
pixel limit. The caller (curation.ingestion.validate) normalises the RGBA result like any image.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import re
import zlib
from types import SimpleNamespace

from PIL import Image

from curation.ingestion.pixels import Refused, bomb_reason, check_pixels, mpx

SVGZ_MAX_BYTES = 100 * 1024 * 1024  # what a compressed SVG may expand to
_SVG_MAX_ELEMENTS = 200_000

_SVG_SNIFF = re.compile(rb"<svg[\s>/]", re.IGNORECASE)
_CSS_URL = re.compile(r"url\(\s*['\"]?\s*([^'\")\s]*)", re.IGNORECASE)
_HREF_NAMES = ("href", "{http://www.w3.org/1999/xlink}href")


def looks_like_svg(data: bytes) -> bool:
    head = data[:4096]
    if head.startswith(b"\x1f\x8b"):
        head = _gunzip_head(data)
    head = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"<") and _SVG_SNIFF.search(head) is not None


def _gunzip_head(data: bytes) -> bytes:
    try:
        return zlib.decompressobj(wbits=31).decompress(data[:65536], 4096)
    except zlib.error:
        return b""


def rasterise_svg(data: bytes, *, max_pixels: int, min_side: int) -> Image.Image:
    try:
        import cairosvg  # imported here: a host without libcairo still ingests raster images
        from cairosvg.helpers import node_format
        from cairosvg.parser import Tree
        from cairosvg.surface import PNGSurface
    except (ImportError, OSError) as exc:
        raise Refused(f"SVG files cannot be rasterised on this host (cairosvg: {exc})") from exc

    if data.startswith(b"\x1f\x8b"):
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
                data = stream.read(SVGZ_MAX_BYTES + 1)
        except (OSError, EOFError) as exc:
            raise Refused(f"corrupt compressed SVG (svgz): {exc}") from exc
        if len(data) > SVGZ_MAX_BYTES:
            raise Refused("compressed SVG expands beyond the per-file limit")
    _check_svg_is_self_contained(data, max_pixels)

    def refuse_fetch(url: str, resource_type: str) -> bytes:
        if url.startswith("data:"):
            return cairosvg.url.fetch(url, resource_type)
        raise Refused(f"SVG refused: it references an external resource ({url[:120]})")

    class _LimitedPNGSurface(PNGSurface):
        def _create_surface(self, width: float, height: float):  # type: ignore[override]
            check_pixels(int(round(width)), int(round(height)), max_pixels)
            return super()._create_surface(width, height)

    try:
        tree = Tree(bytestring=data, unsafe=False, url_fetcher=refuse_fetch)
        units = SimpleNamespace(dpi=96, font_size=16.0, context_width=0, context_height=0)
        width, height, _ = node_format(units, tree)
    except Refused:
        raise
    except Exception as exc:
        raise Refused(f"corrupt SVG: {type(exc).__name__}: {exc}") from exc
    if not width or not height or width <= 0 or height <= 0:
        raise Refused("SVG has no usable size (needs width and height, or a viewBox)")
    scale = max(1.0, min_side / max(width, height))
    out_w, out_h = max(1, round(width * scale)), max(1, round(height * scale))
    check_pixels(out_w, out_h, max_pixels)
    try:
        png = _LimitedPNGSurface.convert(
            bytestring=data,
            unsafe=False,
            url_fetcher=refuse_fetch,
            output_width=out_w,
            output_height=out_h,
        )
    except Refused:
        raise
    except Exception as exc:
        raise Refused(f"SVG could not be rendered: {type(exc).__name__}: {exc}") from exc
    rendered = Image.open(io.BytesIO(png))
    rendered.load()
    return rendered.convert("RGBA")


def _check_svg_is_self_contained(data: bytes, max_pixels: int) -> None:
    """Refuse anything that would make the renderer read outside the document."""
    from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden
    from defusedxml.ElementTree import ParseError, fromstring

    try:
        root = fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DTDForbidden as exc:
        raise Refused(
            "SVG refused: it declares a DOCTYPE (entities and external DTDs are not allowed)"
        ) from exc
    except EntitiesForbidden as exc:
        raise Refused(
            "SVG refused: it declares XML entities (possible XXE or entity bomb)"
        ) from exc
    except ExternalReferenceForbidden as exc:
        raise Refused("SVG refused: it references an external XML resource") from exc
    except ParseError as exc:
        raise Refused(f"corrupt SVG: not well-formed XML ({exc})") from exc
    if root.tag.rsplit("}", 1)[-1] != "svg":
        raise Refused(f"not an SVG: the root element is <{root.tag}>")
    for count, element in enumerate(root.iter()):
        if count > _SVG_MAX_ELEMENTS:
            raise Refused(f"SVG refused: more than {_SVG_MAX_ELEMENTS:,} elements")
        for name, value in element.attrib.items():
            if name in _HREF_NAMES:
                _check_reference(value.strip(), max_pixels)
            for target in _CSS_URL.findall(value):
                _check_reference(target, max_pixels)
        tag = element.tag.rsplit("}", 1)[-1] if isinstance(element.tag, str) else ""
        if tag == "style" and element.text:
            if "@import" in element.text.lower():
                raise Refused("SVG refused: its stylesheet uses @import (external resource)")
            for target in _CSS_URL.findall(element.text):
                _check_reference(target, max_pixels)


def _check_reference(target: str, max_pixels: int) -> None:
    if not target or target.startswith("#"):
        return
    if target.lower().startswith("data:"):
        _check_embedded_raster(target, max_pixels)
        return
    raise Refused(f"SVG refused: it references an external resource ({target[:120]})")


def _check_embedded_raster(url: str, max_pixels: int) -> None:
    header, _, payload = url.partition(",")
    if not header.lower().startswith("data:image/") or "svg" in header.lower():
        return  # nested SVG data is parsed by cairosvg with the same safe settings
    try:
        raw = base64.b64decode(payload, validate=False) if ";base64" in header.lower() else b""
    except (binascii.Error, ValueError):
        return
    if not raw:
        return
    try:
        embedded = Image.open(io.BytesIO(raw))
        width, height = embedded.size
    except Image.DecompressionBombError as exc:
        raise Refused(f"SVG refused: embedded image: {bomb_reason(str(exc))}") from exc
    except Exception:
        return  # cairosvg will skip what it cannot read
    if width * height > max_pixels:
        raise Refused(
            f"SVG refused: embedded image is {width}x{height} = {mpx(width * height)}, "
            f"above the {mpx(max_pixels)} limit"
        )
