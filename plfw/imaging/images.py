"""Image files in and out, made safe against the inputs real folders contain.

Every way a file can be bad (empty, truncated, not an image, a directory, unreadable, absurdly
large, an odd mode) ends as an :class:`ImageError` naming the file and the problem, never as a
Pillow traceback, so a training run can skip the file or stop with one readable line.

Mode conventions of :func:`load_image`:

- EXIF orientation is applied, so images come out the way viewers show them.
- Transparent images (RGBA, LA, PA, palette with transparency) are composited on **white**:
  transparent areas look white in browsers and most viewers, so this matches what the user saw.
- 16-bit images keep their precision (divided by 65535); other modes go through Pillow's RGB
  conversion (CMYK, YCbCr, 1-bit, palette).

Pillow itself still loads 16-bit-per-channel *colour* PNGs as 8-bit RGB; only 16-bit grayscale
keeps all 16 bits. :func:`load_picture` / :func:`save_picture` (used by ``plfw upscale``) keep
what the file has instead: gray or colour, alpha as its own channel, and 16 bits per channel
for 16-bit PNGs (read and written with pypng, which handles every PNG colour type at 16 bits).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from plfw.core.errors import DiskFull, UserError, is_disk_full

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

# plfw's own decompression-bomb limit. 2**27 (134 Mpx, e.g. 11600 x 11600) is far above any SR
# image yet below Pillow's hard limit (2 * Image.MAX_IMAGE_PIXELS, about 179 Mpx), so by default
# this check, not Pillow's, is the one that fires. Pillow's limit still applies above it.
MAX_PIXELS = 2**27

_ALPHA_MODES = {"RGBA", "RGBa", "PA"}
_SIXTEEN_BIT = {"I", "I;16", "I;16L", "I;16B", "I;16N"}

PathArg = str | bytes | os.PathLike


class ImageError(UserError):
    """An image file that cannot be used; the message names the file and what is wrong."""

    def __init__(self, message: str, path: Path | None = None, problem: str = "") -> None:
        super().__init__(message)
        self.path, self.problem = path, problem or message

    @classmethod
    def about(cls, path: PathArg, problem: str) -> ImageError:
        """'image <path>: <problem>', keeping both parts for callers that list many files."""
        return cls(f"image {show_path(path)}: {problem}", as_path(path), problem)


def as_path(path: PathArg) -> Path:
    """A Path from str, bytes or PathLike; bytes names that are not UTF-8 survive (surrogates)."""
    return Path(os.fsdecode(path))


def show_path(path: PathArg) -> str:
    """The path as printable text: undecodable bytes appear as ``\\xe9`` instead of crashing a
    print or a log write."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


_SIGNATURES = {b"\x89PNG": "PNG", b"\xff\xd8\xff": "JPEG", b"BM": "BMP", b"II*\0": "TIFF",
               b"MM\0*": "TIFF", b"RIFF": "WebP"}


def _signature(path: Path) -> str:
    """The format a file's first bytes announce, to tell a damaged image from a non-image."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return ""
    return next((kind for magic, kind in _SIGNATURES.items() if head.startswith(magic)), "")


def _open(path: Path, max_pixels: int) -> Image.Image:
    """Open lazily (header only) and check the size, turning every failure into ImageError."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageError.about(path, "no such file") from None
    except OSError as exc:
        raise ImageError.about(path, f"cannot read it ({exc.strerror or exc})") from None
    if path.is_dir():
        raise ImageError.about(path, "is a directory, not an image file")
    if size == 0:
        raise ImageError.about(path, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except PermissionError:
        raise ImageError.about(path, "permission denied") from None
    except UnidentifiedImageError:
        kind = _signature(path)
        problem = (f"corrupt or truncated {kind} header" if kind
                   else "not an image file Pillow can read (unknown format)")
        raise ImageError.about(path, problem) from None
    except Image.DecompressionBombError as exc:
        raise ImageError.about(path, f"too large to open safely ({exc})") from None
    except Exception as exc:  # a malformed header can raise nearly anything inside Pillow
        problem = f"corrupt or truncated header ({type(exc).__name__}: {exc})"
        raise ImageError.about(path, problem) from None
    w, h = im.size
    if w * h > max_pixels:
        im.close()
        raise ImageError.about(path, f"{w}x{h} = {w * h} pixels is above the limit of {max_pixels} "
                          f"(a decompression bomb or a mistake); raise max_pixels if it is real")
    if w < 1 or h < 1:
        im.close()
        raise ImageError.about(path, f"has an empty size {w}x{h}")
    return im


def probe_image(path: PathArg, max_pixels: int | None = None) -> tuple[int, int]:
    """Cheap check that ``path`` is a usable image: header, size limit and (for PNG) the chunk
    checksums, without decoding pixels. Returns (width, height) as stored (before EXIF)."""
    p = as_path(path)
    im = _open(p, MAX_PIXELS if max_pixels is None else max_pixels)
    try:
        with im:
            size = im.size
            im.verify()
    except Exception as exc:  # verify() reports damage through many exception types
        raise ImageError.about(p, f"corrupt or truncated ({type(exc).__name__}: {exc})") from None
    return size


def _decode(path: Path, max_pixels: int) -> Image.Image:
    im = _open(path, max_pixels)
    try:
        with im:
            im.load()
            try:
                return ImageOps.exif_transpose(im)
            except Exception:  # broken EXIF block: the pixels are fine, keep them unrotated
                return im.copy()
    except ImageError:
        raise
    except Exception as exc:
        problem = f"corrupt or truncated ({type(exc).__name__}: {exc})"
        raise ImageError.about(path, problem) from None


def _on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float32)[..., None] / 255.0
    return rgb.astype(np.float32) / 255.0 * a + (1.0 - a)


def _to_array(im: Image.Image, keep_gray: bool, path: Path) -> np.ndarray:
    """HWC pixels with 1 channel (grayscale, if keep_gray) or 3: uint8 for 8-bit sources (kept
    exact and cheap), float32 in [0, 1] for deeper or alpha-composited ones."""
    mode = im.mode
    if mode in _SIXTEEN_BIT:
        arr = np.clip(np.asarray(im, dtype=np.float32) / 65535.0, 0.0, 1.0)[..., None]
    elif mode == "F":
        arr = np.clip(np.asarray(im, dtype=np.float32), 0.0, 1.0)[..., None]
    elif mode in ("LA", "La"):
        la = np.asarray(im.convert("LA"))
        arr = _on_white(la[..., :1], la[..., 1])
    elif mode in ("1", "L"):
        arr = np.asarray(im.convert("L"))[..., None]
    else:
        try:
            if mode in _ALPHA_MODES or "transparency" in im.info:
                rgba = np.asarray(im.convert("RGBA"))
                arr = _on_white(rgba[..., :3], rgba[..., 3])
            else:
                arr = np.asarray(im.convert("RGB"))
        except (ValueError, OSError) as exc:
            raise ImageError.about(path, f"unsupported image mode {mode} ({exc})") from None
    if arr.shape[-1] == 1 and not keep_gray:
        arr = np.repeat(arr, 3, axis=-1)
    return arr


def _load(path: PathArg, keep_gray: bool, max_pixels: int | None) -> np.ndarray:
    p = as_path(path)
    im = _decode(p, MAX_PIXELS if max_pixels is None else max_pixels)
    with im:
        return _to_array(im, keep_gray, p).transpose(2, 0, 1)


def _as_float(arr: np.ndarray) -> torch.Tensor:
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / np.float32(255)
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))


def load_image(path: PathArg, max_pixels: int | None = None) -> torch.Tensor:
    """Read an image file as a float32 RGB tensor, CHW, in [0, 1] (see the module notes)."""
    return _as_float(_load(path, False, max_pixels))


def load_gray_or_rgb(path: PathArg, max_pixels: int | None = None) -> torch.Tensor:
    """Like :func:`load_image` but a grayscale file keeps its single channel (C = 1), so metrics
    can score it on the channel it really has."""
    return _as_float(_load(path, True, max_pixels))


def load_image_uint8(path: PathArg, max_pixels: int | None = None) -> torch.Tensor:
    """Like :func:`load_image` but as uint8 levels 0..255 (deeper images are rounded): what
    MATLAB-style LR generation and compact in-memory caches want."""
    arr = _load(path, False, max_pixels)
    if arr.dtype != np.uint8:
        arr = np.rint(arr * 255).astype(np.uint8)
    return torch.from_numpy(np.ascontiguousarray(arr))


def _to_pil(tensor: torch.Tensor) -> Image.Image:
    t = tensor.detach().cpu()
    if t.dim() == 4 and t.shape[0] == 1:
        t = t[0]
    if t.dim() == 2:
        t = t[None]
    if t.dim() != 3 or t.shape[0] not in (1, 3):
        raise ValueError(f"save_image expects CHW with 1 or 3 channels, got {tuple(tensor.shape)}")
    if t.is_floating_point():
        t = (t.float().clamp(0, 1) * 255).round()
    arr = t.to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)


def save_image(tensor: torch.Tensor, path: PathArg, overwrite: bool = False) -> Path:
    """Write a CHW image in [0, 1] (or uint8) to ``path``, format from the suffix.

    The file is written under a temporary name in the same folder and renamed into place, so a
    crash never leaves half an image under the real name. An existing file is only replaced
    with ``overwrite=True``."""
    p = as_path(path)
    suffix = p.suffix.lower()
    fmt = Image.registered_extensions().get(suffix)
    if suffix not in IMAGE_SUFFIXES or fmt is None:
        raise UserError(f"cannot save {show_path(p)}: unknown image suffix '{p.suffix}' "
                        f"(use one of {', '.join(IMAGE_SUFFIXES)})")
    if p.exists() and not overwrite:
        raise UserError(f"{show_path(p)} already exists; pass --overwrite to replace it")
    im = _to_pil(tensor)
    options: dict[str, Any] = {"quality": 95} if fmt == "JPEG" else {}
    _write_atomically(p, lambda f: im.save(f, format=fmt, **options))
    return p


def _write_atomically(p: Path, write: Callable[[Any], None]) -> None:
    """Call ``write(file)`` on a temporary file beside ``p``, then rename it into place."""
    tmp = p.with_name(f".{p.name}.{secrets.token_hex(4)}.tmp")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: never clobber anything; mode 0o666 so the umask decides, as for a plain open().
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, p)
    except OSError as exc:
        with contextlib.suppress(OSError):  # a read-only folder cannot even be cleaned
            tmp.unlink(missing_ok=True)
        if is_disk_full(exc):
            raise DiskFull(p) from None
        raise UserError(f"cannot write {show_path(p)}: {exc.strerror or exc}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------ pictures as files hold them
@dataclass
class Picture:
    """An image as its file holds it: ``colour`` (C=1 gray or 3 RGB, float32 [0, 1], CHW),
    ``alpha`` (1HW in [0, 1]) or None, and the bits per channel of the file (8 or 16)."""

    colour: torch.Tensor
    alpha: torch.Tensor | None
    bits: int = 8


def _png_header(path: Path) -> tuple[int, int, int, int] | None:
    """(width, height, bit depth, colour type) from a PNG's IHDR, or None if not a PNG."""
    try:
        with open(path, "rb") as f:
            head = f.read(33)
    except OSError:
        return None
    if len(head) < 33 or not head.startswith(b"\x89PNG\r\n\x1a\n") or head[12:16] != b"IHDR":
        return None
    width, height, depth, kind = struct.unpack(">IIBB", head[16:26])
    return width, height, depth, kind


def _load_png16(path: Path, size: tuple[int, int], max_pixels: int) -> Picture:
    import png  # pypng

    w, h = size
    if w * h > max_pixels:
        raise ImageError.about(path, f"{w}x{h} = {w * h} pixels is above the limit of "
                                     f"{max_pixels} (a decompression bomb or a mistake)")
    try:
        width, height, rows, info = png.Reader(filename=str(path)).asDirect()
        arr = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows])
    except Exception as exc:  # pypng reports damage through its own and zlib's exceptions
        problem = f"corrupt or truncated 16-bit PNG ({type(exc).__name__}: {exc})"
        raise ImageError.about(path, problem) from None
    planes = int(info["planes"])
    arr = arr.reshape(height, width, planes).astype(np.float32) / np.float32(65535)
    chw = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
    if info["alpha"]:
        return Picture(chw[:-1].contiguous(), chw[-1:].contiguous(), 16)
    return Picture(chw, None, 16)


def load_picture(path: PathArg, max_pixels: int | None = None) -> Picture:
    """Read an image keeping gray vs colour, alpha (as its own channel) and 16-bit depth."""
    p = as_path(path)
    limit = MAX_PIXELS if max_pixels is None else max_pixels
    header = _png_header(p)
    if header is not None and header[2] == 16:
        return _load_png16(p, header[:2], limit)
    im = _decode(p, limit)
    with im:
        mode = im.mode
        try:
            if mode in _SIXTEEN_BIT:
                arr = np.asarray(im, dtype=np.float32)[..., None] / np.float32(65535)
                return Picture(_as_float(np.clip(arr, 0, 1)).permute(2, 0, 1), None, 16)
            if mode == "F":
                arr = np.clip(np.asarray(im, dtype=np.float32), 0, 1)[..., None]
                return Picture(_as_float(arr).permute(2, 0, 1), None, 8)
            transparent = "transparency" in im.info
            if mode in ("LA", "La") or (mode in ("1", "L") and transparent):
                la = np.asarray(im.convert("LA"))
                colour, alpha = la[..., :1], la[..., 1:]
            elif mode in ("1", "L"):
                colour, alpha = np.asarray(im.convert("L"))[..., None], None
            elif mode in _ALPHA_MODES or transparent:
                rgba = np.asarray(im.convert("RGBA"))
                colour, alpha = rgba[..., :3], rgba[..., 3:]
            else:
                colour, alpha = np.asarray(im.convert("RGB")), None
        except (ValueError, OSError) as exc:
            raise ImageError.about(p, f"unsupported image mode {mode} ({exc})") from None
    return Picture(_as_float(colour.transpose(2, 0, 1)),
                   None if alpha is None else _as_float(alpha.transpose(2, 0, 1)), 8)


SAVE_FORMATS = {"png": "PNG", "webp": "WEBP", "jpg": "JPEG", "jpeg": "JPEG"}


def _levels(t: torch.Tensor, bits: int) -> np.ndarray:
    top = 65535 if bits == 16 else 255
    arr = (t.detach().cpu().float().clamp(0, 1) * top).round()
    return arr.numpy().astype(np.uint16 if bits == 16 else np.uint8).transpose(1, 2, 0)


def save_picture(pic: Picture, path: PathArg, overwrite: bool = False,
                 quality: int = 95) -> Path:
    """Write ``pic`` as PNG (8 or 16 bits, gray or colour, with or without alpha), WebP or
    JPEG (8 bits; JPEG has no alpha: composite first), atomically, never over an existing
    file unless ``overwrite``."""
    p = as_path(path)
    fmt = SAVE_FORMATS.get(p.suffix.lower().lstrip("."))
    if fmt is None:
        raise UserError(f"cannot save {show_path(p)}: unknown image suffix '{p.suffix}' "
                        f"(use one of {', '.join('.' + k for k in SAVE_FORMATS)})")
    if pic.colour.dim() != 3 or pic.colour.shape[0] not in (1, 3):
        raise ValueError(f"colour must be CHW with 1 or 3 channels, got {tuple(pic.colour.shape)}")
    if pic.alpha is not None and fmt == "JPEG":
        raise UserError(f"cannot save {show_path(p)}: JPEG has no alpha channel")
    if p.exists() and not overwrite:
        raise UserError(f"{show_path(p)} already exists; pass --overwrite to replace it")
    planes = pic.colour if pic.alpha is None else torch.cat([pic.colour, pic.alpha])
    gray = pic.colour.shape[0] == 1
    if fmt == "PNG" and pic.bits == 16:
        import png  # pypng

        arr = _levels(planes, 16)
        h, w, c = arr.shape
        writer = png.Writer(w, h, greyscale=gray, alpha=pic.alpha is not None, bitdepth=16)
        _write_atomically(p, lambda f: writer.write(f, arr.reshape(h, w * c)))
        return p
    arr = _levels(planes, 8)
    mode = {(True, False): "L", (True, True): "LA", (False, False): "RGB",
            (False, True): "RGBA"}[(gray, pic.alpha is not None)]
    im = Image.fromarray(arr[..., 0] if mode == "L" else arr)  # LA / RGB / RGBA by shape
    options: dict[str, Any] = {"quality": int(quality)} if fmt in ("JPEG", "WEBP") else {}
    if fmt == "WEBP" and mode in ("L", "LA"):  # WebP stores colour only
        im = im.convert("RGBA" if mode == "LA" else "RGB")
    _write_atomically(p, lambda f: im.save(f, format=fmt, **options))
    return p


def list_images(folder: PathArg, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` (by suffix, any case), sorted. Hidden files (``.name``, e.g.
    macOS ``._x.png`` resource forks) are left out."""
    root = as_path(folder)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        hint = "" if root.is_absolute() else f" (relative to the current folder {Path.cwd()})"
        raise UserError(f"image folder {show_path(root)} {what}{hint}")
    found = root.rglob("*") if recursive else root.iterdir()
    images = sorted(
        p for p in found
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )
    if not images:
        raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {show_path(root)}"
                        + ("" if recursive else " (subfolders are not searched)"))
    return images
