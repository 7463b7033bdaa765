"""A hostile photo folder, generated: every kind of file a real library holds, and worse.

`build(root)` writes the corpus and returns what indexing must make of each image-named
entry: "indexed", "either" (a bit flip may or may not still decode) or the start
of the skip reason. `upright(seed)` is the picture the well-formed variants show.
"""

from __future__ import annotations

import io
import os
import socket
import stat
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, features

INDEXED, EITHER = "indexed", "either"
SIZE = (96, 64)  # width, height of the upright pictures

_TO_STORED = {  # EXIF orientation -> the transpose that makes the stored pixels from the upright picture
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def upright(seed: int = 7) -> Image.Image:
    """A picture with hard-edged colour blocks (so a wrong rotation or colour is obvious)."""
    rng = np.random.default_rng(seed)
    grid = (rng.random((4, 6, 3)) * 255).astype(np.uint8)
    return Image.fromarray(grid).resize(SIZE, Image.Resampling.NEAREST)


def oriented(img: Image.Image, orientation: int) -> tuple[Image.Image, bytes]:
    """The stored pixels and EXIF of a camera file showing `img` with that orientation tag."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    method = _TO_STORED.get(orientation)
    return (img.transpose(method) if method is not None else img), exif.tobytes()


def variants(root: Path) -> dict[str, Path]:
    """Well-formed files that all show `upright()`: orientations, colour modes, formats."""
    img = upright()
    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}

    def save(name: str, im: Image.Image, fmt: str, **kw: object) -> None:
        out[name] = root / name
        im.save(out[name], fmt, **kw)

    save("reference.png", img, "PNG")
    for o in range(1, 9):
        stored, exif = oriented(img, o)
        save(f"orient{o}.png", stored, "PNG", exif=exif)
        save(f"orient{o}.jpg", stored, "JPEG", exif=exif, quality=95)
    save("cmyk.jpg", img.convert("CMYK"), "JPEG", quality=95)
    save("cmyk.tif", img.convert("CMYK"), "TIFF")
    save("cmyk-icc.jpg", cmyk_for_profile(img), "JPEG", quality=95, icc_profile=cmyk_profile())
    save("cmyk-icc.tif", cmyk_for_profile(img), "TIFF", icc_profile=cmyk_profile())
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    save("srgb-icc.jpg", img, "JPEG", quality=95, icc_profile=srgb)
    save("gray16.tif", _gray16(img), "TIFF")
    save("gray16.png", _gray16(img), "PNG")
    out["rgb16.png"] = root / "rgb16.png"
    out["rgb16.png"].write_bytes(_png16(np.asarray(img)))
    pal = img.quantize(colors=64)
    pal.info["transparency"] = 255  # an unused index: transparent pixels would show on white
    save("palette-alpha.png", pal, "PNG", transparency=255)
    rgba = img.convert("RGBA")
    save("rgba-opaque.png", rgba, "PNG")
    frames = [img] + [Image.new("RGB", SIZE, c) for c in ((255, 0, 0), (0, 0, 255))]
    save("animated.gif", frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    save("animated.webp", frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    save("photo.heic", img, "HEIF", quality=95)
    stored, exif = oriented(img, 6)
    save("rotated.heic", stored, "HEIF", quality=95, exif=exif)
    if features.check("avif"):
        save("photo.avif", img, "AVIF", quality=95)
    return out


def build(root: Path) -> dict[bytes, str]:
    """Write the hostile corpus under `root`; return {path: expected outcome} for image-named entries."""
    expect: dict[bytes, str] = {}
    for name, path in variants(root / "good").items():
        expect[os.fsencode(path)] = INDEXED
    bad = root / "bad"
    bad.mkdir()

    def put(name: str | bytes, data: bytes, outcome: str) -> Path:
        path = Path(os.fsdecode(os.path.join(os.fsencode(bad), os.fsencode(name))))
        path.write_bytes(data)
        expect[os.fsencode(path)] = outcome
        return path

    jpeg = (root / "good" / "orient1.jpg").read_bytes()
    png = (root / "good" / "reference.png").read_bytes()
    put("truncated.jpg", jpeg[: len(jpeg) // 3], "corrupt image")
    put("truncated.png", png[: len(png) // 2], "corrupt image")
    put("empty.jpg", b"", "empty file")
    put("png-named.jpg", png, INDEXED)  # the wrong extension: the content decides
    put("text-named.png", b"holiday notes, not a picture\n", "not a supported image format")
    ico = io.BytesIO()
    upright().save(ico, "ICO")
    put("icon-named.png", ico.getvalue(), "not a supported image format")  # outside the allow-list
    put(b"caf\xe9-latin1.jpg", jpeg, INDEXED)  # a name that is not UTF-8
    put(b"\xff\xfe-bytes.png", png, INDEXED)
    for i, offset in enumerate((len(jpeg) // 2, len(jpeg) - 200, 700)):
        flipped = bytearray(jpeg)
        flipped[offset] ^= 0x10
        put(f"bitflip{i}.jpg", bytes(flipped), EITHER)
    flipped = bytearray(png)
    flipped[20] ^= 0x01  # inside IHDR: its CRC no longer matches
    put("bitflip-header.png", bytes(flipped), EITHER)
    put("bomb.png", _png_header(100_000, 100_000), "too large")
    put("bomb.jpg", _jpeg_with_size(jpeg, 60_000, 60_000), "too large")
    put("bomb.gif", _gif_with_size(65_535, 65_535), "too large")
    unreadable = put("unreadable.jpg", jpeg, "unreadable: Permission denied")
    unreadable.chmod(0)

    special = root / "special"
    special.mkdir()
    os.mkfifo(special / "fifo.jpg")
    expect[os.fsencode(special / "fifo.jpg")] = "not a regular file (a FIFO)"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(special / "socket.png"))
    sock.close()
    expect[os.fsencode(special / "socket.png")] = "not a regular file (a socket)"
    if os.geteuid() == 0:
        os.mknod(special / "device.jpg", stat.S_IFCHR | 0o600, os.makedev(1, 3))  # like /dev/null
        expect[os.fsencode(special / "device.jpg")] = "not a regular file (a device)"
    (special / "loop-a.jpg").symlink_to("loop-b.jpg")
    (special / "loop-b.jpg").symlink_to("loop-a.jpg")
    (special / "dangling.jpg").symlink_to("nowhere.jpg")
    for name in ("loop-a.jpg", "loop-b.jpg"):
        expect[os.fsencode(special / name)] = "cannot stat: Too many levels of symbolic links"
    expect[os.fsencode(special / "dangling.jpg")] = "cannot stat: No such file or directory"
    (special / "link.jpg").symlink_to(root / "good" / "orient1.jpg")
    expect[os.fsencode(special / "link.jpg")] = INDEXED
    (special / "sub").mkdir()
    (special / "sub" / "up").symlink_to("..", target_is_directory=True)  # a folder loop: the walk must end
    (special / "sub" / "down").symlink_to(root, target_is_directory=True)
    return expect


def _gray16(img: Image.Image) -> Image.Image:
    gray = np.asarray(img.convert("L")).astype("<u2") * 257  # the full 16-bit range
    return Image.frombytes("I;16", img.size, gray.tobytes())


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png16(rgb: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one) of an (H, W, 3) uint8 array."""
    h, w, _ = rgb.shape
    wide = (rgb.astype(">u2") * 257).reshape(h, w * 3)  # (H, 3W) big-endian
    raw = b"".join(b"\x00" + row.tobytes() for row in wide)
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")


def _png_header(w: int, h: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"")) + _chunk(b"IEND", b"")


def _jpeg_with_size(jpeg: bytes, w: int, h: int) -> bytes:
    """The same JPEG with its frame header claiming w x h pixels."""
    sof = jpeg.index(b"\xff\xc0")
    return jpeg[: sof + 5] + struct.pack(">HH", h, w) + jpeg[sof + 9 :]


def _gif_with_size(w: int, h: int) -> bytes:
    gif = io.BytesIO()
    Image.new("P", (4, 4), 0).save(gif, "GIF")
    data = bytearray(gif.getvalue())
    data[6:10] = struct.pack("<HH", w, h)  # the logical screen
    i = data.index(b"\x2c")  # the image descriptor
    data[i + 5 : i + 9] = struct.pack("<HH", w, h)
    return bytes(data)


def cmyk_profile(grid: int = 9) -> bytes:
    """A minimal ICC v2 CMYK printer profile (an A2B0 lut16 to Lab) that renders the
    channels crosswise: magenta ink takes red away, yellow green, cyan blue.

    No CMYK profile ships with the OS or Pillow, so the tests make one. Because its
    mapping is not Pillow's naive CMYK->RGB, a decoder that ignores the embedded
    profile shows the picture with its colours rotated, which the tests catch.
    """
    axis = np.linspace(0.0, 1.0, grid)
    c, m, y, k = np.meshgrid(axis, axis, axis, axis, indexing="ij")  # first channel varies slowest
    rgb = np.stack([(1 - m) * (1 - k), (1 - y) * (1 - k), (1 - c) * (1 - k)], axis=-1).reshape(-1, 3)
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    to_xyz_d50 = np.array([[0.4360747, 0.3850649, 0.1430804], [0.2225045, 0.7168786, 0.0606169],
                           [0.0139322, 0.0971045, 0.7141733]])
    xyz = lin @ to_xyz_d50.T / np.array([0.9642, 1.0, 0.8249])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    lab = np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=-1)
    enc = np.stack([lab[:, 0] / 100 * 0xFF00, (lab[:, 1] + 128) * 256, (lab[:, 2] + 128) * 256], axis=-1)
    clut = np.clip(np.rint(enc), 0, 0xFFFF).astype(">u2").tobytes()
    identity = struct.pack(">9i", *(65536 if i in (0, 4, 8) else 0 for i in range(9)))
    ramp = struct.pack(">2H", 0, 0xFFFF)
    lut = b"mft2" + bytes(4) + bytes([4, 3, grid, 0]) + identity + struct.pack(">2H", 2, 2) + ramp * 4 + clut + ramp * 3
    desc_text = b"clipdex test CMYK\x00"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(desc_text)) + desc_text + bytes(4 + 4 + 2 + 1 + 67)
    wtpt = b"XYZ " + bytes(4) + struct.pack(">3i", *(round(v * 65536) for v in (0.9642, 1.0, 0.8249)))
    tags = [(b"A2B0", lut), (b"desc", desc), (b"wtpt", wtpt)]
    offset = 128 + 4 + 12 * len(tags)
    table, body = struct.pack(">I", len(tags)), b""
    for sig, data in tags:
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data + bytes(-len(data) % 4)
    size = offset + len(body)
    header = (
        struct.pack(">I", size) + bytes(4) + struct.pack(">I", 0x02100000) + b"prtrCMYKLab "
        + struct.pack(">6H", 2026, 1, 1, 0, 0, 0) + b"acsp" + bytes(4 + 4 + 4 + 4 + 8) + struct.pack(">I", 0)
        + struct.pack(">3i", *(round(v * 65536) for v in (0.9642, 1.0, 0.8249))) + bytes(4 + 16 + 28)
    )
    assert len(header) == 128
    return header + table + body


def cmyk_for_profile(img: Image.Image) -> Image.Image:
    """The CMYK pixels that `cmyk_profile()` renders as `img`."""
    r, g, b = (255 - np.asarray(img.convert("RGB"))[..., i].astype(np.int16) for i in range(3))
    cmyk = np.stack([b, r, g, np.zeros_like(r)], axis=-1).astype(np.uint8)  # c=1-B, m=1-R, y=1-G
    return Image.fromarray(cmyk, mode="CMYK")
