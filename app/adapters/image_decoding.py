"""Images from outside as the pixels a model reads: checked before they are decoded.

An image fetched by reference is untrusted bytes: a few hundred bytes of PNG can claim a
100,000 x 100,000 canvas and take gigabytes to decode. So the format and the size are read
from the file's own header first (PNG, JPEG, BMP, WebP, PGM/PPM), the pixel count held to
a limit, and only then is the image decoded (OpenCV, gray, EXIF orientation ignored so the
decoded size is the header's). An image whose decoded size differs from its header, that
OpenCV cannot decode, or that is cut short (a PNG without its end chunk, a JPEG without its
end marker) is refused as corrupt. (A JPEG damaged inside its data still decodes, with
grey blocks where libjpeg filled in, as any viewer shows it.)

``frame_to_digit`` makes any gray or colour image an 8x8 digit in 0..16, as the digits
model learnt them: the edge's cameras and referenced images both go through it.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

import cv2
import numpy as np

from edgewise.app.core.frames import BadInput

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: JPEG start-of-frame markers (baseline, progressive, lossless...; not DHT, JPG, DAC)
JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
JPEG_TAIL_BYTES = 1024  # the end marker is looked for this near the end (padding after it)
_PNM = re.compile(rb"P[2356]\s+(?:#[^\n]*\n\s*)*(\d{1,9})\s+(?:#[^\n]*\n\s*)*(\d{1,9})\s")


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header says: its format and size, before anything is decoded."""

    format: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def _corrupt(detail: str) -> BadInput:
    return BadInput("corrupt_image", detail)


def _png(data: bytes) -> ImageHeader:
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise _corrupt("a PNG without its header chunk")
    width, height = struct.unpack(">II", data[16:24])
    if not data.rstrip(b"\x00").endswith(b"IEND\xaeB`\x82"):
        raise _corrupt("a PNG cut short (no end chunk)")
    return ImageHeader("png", width, height)


def _jpeg(data: bytes) -> ImageHeader:
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            raise _corrupt(f"a JPEG with a broken segment at byte {at}")
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            at += 2
            continue
        (length,) = struct.unpack(">H", data[at + 2:at + 4])
        if length < 2:
            raise _corrupt(f"a JPEG segment of length {length}")
        if marker in JPEG_FRAMES:
            if at + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[at + 5:at + 9])
            if b"\xff\xd9" not in data[-JPEG_TAIL_BYTES:]:
                raise _corrupt("a JPEG cut short (no end marker)")
            return ImageHeader("jpeg", width, height)
        if marker == 0xDA:  # scan data before any frame header
            break
        at += 2 + length
    raise _corrupt("a JPEG without a frame header")


def _bmp(data: bytes) -> ImageHeader:
    if len(data) < 26:
        raise _corrupt("a BMP cut short")
    (header_size,) = struct.unpack("<I", data[14:18])
    if header_size == 12:  # OS/2 BITMAPCOREHEADER
        width, height = struct.unpack("<HH", data[18:22])
    else:
        width, height = struct.unpack("<ii", data[18:26])
    return ImageHeader("bmp", abs(width), abs(height))


def _webp(data: bytes) -> ImageHeader:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
    elif chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = (v & 0x3FFF for v in struct.unpack("<HH", data[26:30]))
    elif chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    else:
        raise _corrupt("a WebP without a frame header")
    return ImageHeader("webp", width, height)


def image_header(data: bytes) -> ImageHeader:
    """The format and size an image's header states; BadInput ``unsupported_format`` for
    anything but PNG, JPEG, BMP, WebP and PGM/PPM, ``corrupt_image`` for a broken header."""
    if not data:
        raise BadInput("empty", "the object has no bytes")
    if data.startswith(PNG_SIGNATURE):
        return _png(data)
    if data.startswith(b"\xff\xd8"):
        return _jpeg(data)
    if data.startswith(b"BM"):
        return _bmp(data)
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return _webp(data)
    if data[:2] in (b"P2", b"P3", b"P5", b"P6"):
        match = _PNM.match(data[:256])
        if match is None:
            raise _corrupt("a PGM/PPM without its size")
        return ImageHeader("pnm", int(match.group(1)), int(match.group(2)))
    raise BadInput("unsupported_format", f"not a PNG, JPEG, BMP, WebP or PGM/PPM image "
                                         f"(starts {data[:8].hex()})")


def decode_gray(data: bytes, max_pixels: int) -> np.ndarray:
    """The image as one 8-bit gray channel, its size checked against ``max_pixels`` before
    it is decoded (BadInput ``too_many_pixels``), and against its header after."""
    header = image_header(data)
    if header.width < 1 or header.height < 1:
        raise _corrupt(f"a {header.format} of {header.width}x{header.height} pixels")
    if header.pixels > max_pixels:
        raise BadInput("too_many_pixels", f"a {header.format} of {header.width}x"
                                          f"{header.height} pixels, over {max_pixels:,}")
    flags = cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION
    gray = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    if gray is None:
        raise _corrupt(f"OpenCV could not decode this {header.format}")
    if gray.shape != (header.height, header.width):
        raise _corrupt(f"the {header.format} decoded to {gray.shape[1]}x{gray.shape[0]}, its "
                       f"header says {header.width}x{header.height}")
    return gray


def frame_to_digit(frame: np.ndarray) -> np.ndarray:
    """A camera frame as an 8x8 digit in 0..16, ink bright on dark as the model learnt."""
    gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    small = cv2.resize(gray, (8, 8), interpolation=cv2.INTER_AREA).astype(np.float64)
    if small.mean() > 127:  # dark ink on paper: invert
        small = 255.0 - small
    return np.clip(np.rint(small * 16.0 / 255.0), 0, 16).astype(np.uint8)
