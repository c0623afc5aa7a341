"""Strip metadata (EXIF with its GPS position, XMP, IPTC, comments, text chunks) from image files
without touching the pixels: JPEG segments, PNG chunks and WebP RIFF chunks are dropped as
bytes, nothing is decoded or re-encoded, so the stripped file decodes to exactly the same image.

Kept, because they change how pixels look: JPEG's JFIF and Adobe segments and ICC profile; PNG's
critical chunks and colour/transparency/animation chunks; WebP's VP8X, ICC, alpha and animation
chunks. Anything after the end of the image (a JPEG trailer, bytes after PNG's IEND) is dropped.
A file that does not parse as its format is returned unchanged.
"""

from __future__ import annotations

import struct

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_KEEP = {
    b"tRNS",
    b"gAMA",
    b"cHRM",
    b"sRGB",
    b"iCCP",
    b"cICP",
    b"sBIT",
    b"bKGD",
    b"pHYs",
    b"acTL",
    b"fcTL",
    b"fdAT",
}
_WEBP_KEEP = {b"VP8X", b"VP8 ", b"VP8L", b"ALPH", b"ICCP", b"ANIM", b"ANMF"}
_WEBP_EXIF_FLAG, _WEBP_XMP_FLAG = 0x08, 0x04


def strip_metadata(data: bytes, fmt: str) -> bytes:
    """`data` without its metadata; the same object when there was nothing to strip."""
    strip = {"JPEG": _strip_jpeg, "PNG": _strip_png, "WEBP": _strip_webp}.get(fmt)
    if strip is None:
        return data
    try:
        stripped = strip(data)
    except (IndexError, struct.error, ValueError):
        return data
    return data if stripped == data else stripped


def _jpeg_segment_kept(marker: int, body: bytes) -> bool:
    if marker == 0xE0:
        return body.startswith(b"JFIF\x00")
    if marker == 0xE2:
        return body.startswith(b"ICC_PROFILE\x00")
    if marker == 0xEE:
        return body.startswith(b"Adobe")
    return not (0xE1 <= marker <= 0xEF or marker == 0xFE)  # other APPn and comments go


def _strip_jpeg(data: bytes) -> bytes:
    if not data.startswith(b"\xff\xd8"):
        raise ValueError("not a JPEG")
    out = bytearray(b"\xff\xd8")
    at, size = 2, len(data)
    while at < size:
        if data[at] != 0xFF:
            raise ValueError("JPEG segment does not start with a marker")
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte before a marker
            at += 1
            continue
        if marker == 0xD9:
            out += b"\xff\xd9"
            return bytes(out)
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            out += data[at : at + 2]
            at += 2
            continue
        (length,) = struct.unpack(">H", data[at + 2 : at + 4])
        end = at + 2 + length
        if end > size:
            raise ValueError("JPEG segment runs past the end")
        if marker == 0xDA:  # start of scan: copy the entropy-coded data up to the next marker
            scan = end
            while True:
                scan = data.index(b"\xff", scan)
                following = data[scan + 1]
                if following == 0x00 or 0xD0 <= following <= 0xD7:
                    scan += 2
                elif following == 0xFF:
                    scan += 1
                else:
                    break
            out += data[at:scan]
            at = scan
            continue
        if _jpeg_segment_kept(marker, data[at + 4 : end]):
            out += data[at:end]
        at = end
    raise ValueError("JPEG has no end-of-image marker")


def _strip_png(data: bytes) -> bytes:
    if not data.startswith(_PNG_SIGNATURE):
        raise ValueError("not a PNG")
    out = bytearray(_PNG_SIGNATURE)
    at = len(_PNG_SIGNATURE)
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind = data[at + 4 : at + 8]
        end = at + 12 + length
        if end > len(data):
            raise ValueError("PNG chunk runs past the end")
        critical = kind[:1].isupper()
        if critical or kind in _PNG_KEEP:
            out += data[at:end]
        at = end
        if kind == b"IEND":
            return bytes(out)
    raise ValueError("PNG has no IEND chunk")


def _strip_webp(data: bytes) -> bytes:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise ValueError("not a WebP")
    (riff_size,) = struct.unpack("<I", data[4:8])
    end_of_riff = min(len(data), 8 + riff_size)
    chunks = bytearray()
    at = 12
    while at + 8 <= end_of_riff:
        kind = data[at : at + 4]
        (length,) = struct.unpack("<I", data[at + 4 : at + 8])
        end = at + 8 + length + (length & 1)
        if at + 8 + length > end_of_riff:
            raise ValueError("WebP chunk runs past the end")
        if kind in _WEBP_KEEP:
            chunk = bytearray(data[at:end])
            if kind == b"VP8X":
                chunk[8] &= ~(_WEBP_EXIF_FLAG | _WEBP_XMP_FLAG) & 0xFF
            chunks += chunk
        at = end
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WEBP" + bytes(chunks)
