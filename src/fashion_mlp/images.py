"""Turn a user's photo or drawing (PNG/JPEG, any size or colour) into a Fashion-MNIST-like input.

Fashion-MNIST shows a light garment on a black background, trimmed to the garment, scaled so its
longer side fills the 28-pixel frame, and centred. We do the same, inverting a light background.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import InvalidValue, MissingFile

SIDE = 28
MAX_PIXELS = 50_000_000  # refuse decompression bombs
MIN_CONTRAST = 8.0  # grey levels between the darkest and lightest pixel; less is a blank image


class ImageError(InvalidValue):
    """An image we cannot classify; ``kind`` is "unreadable", "too large" or "blank"."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def load_image(
    source: str | Path | BinaryIO, max_pixels: int = MAX_PIXELS, name: str | None = None
) -> np.ndarray:
    """A uint8 (28, 28) image: grayscale, dark background, garment trimmed and centred.

    ``source`` is a file's path or an open binary file (``name`` then names it in errors). An image of
    more than ``max_pixels`` pixels is refused from its header, before it is decoded: a decompression bomb.
    """
    path = name or (str(source) if isinstance(source, (str, Path)) else "image")
    Image.MAX_IMAGE_PIXELS = max(max_pixels, MAX_PIXELS)  # Pillow's own guard; ours below is exact
    try:
        with Image.open(Path(source) if isinstance(source, str) else source) as img:
            if img.width * img.height > max_pixels:
                raise Image.DecompressionBombError(
                    f"{img.width}x{img.height} is more than {max_pixels:,} pixels"
                )
            img.load()
            pixels = _grayscale(img)
    except FileNotFoundError:
        raise MissingFile(f"{path}: no such image file") from None
    except Image.DecompressionBombError as err:
        raise ImageError(f"{path}: too large to decode ({err})", "too large") from None
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        SyntaxError,
        EOFError,
        struct.error,
        IndexError,
    ) as err:
        # Pillow's decoders raise SyntaxError for a broken PNG chunk (found by fuzzing), struct.error and
        # IndexError for truncated headers, EOFError for a truncated file.
        raise ImageError(f"{path}: not a readable PNG or JPEG image ({err})", "unreadable") from None
    try:
        return to_fashion_mnist(pixels)
    except ValueError as err:
        raise ImageError(f"{path}: {err}", "blank") from None


def _grayscale(img: Image.Image) -> np.ndarray:
    """Float pixels in 0-255. 16-bit and float images are scaled to that range, not clipped."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        pixels = np.asarray(img, dtype=np.float32)
        low, high = float(pixels.min()), float(pixels.max())
        return (pixels - low) * (255.0 / max(high - low, 1e-6))
    return np.asarray(_flatten_alpha(img).convert("L"), dtype=np.float32)


def _flatten_alpha(img: Image.Image) -> Image.Image:
    """Composite transparent images onto white, so transparency reads as background."""
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba)
    return img


def to_fashion_mnist(pixels: np.ndarray) -> np.ndarray:
    """Grayscale float pixels (H, W) in 0-255 to uint8 (28, 28) in Fashion-MNIST's layout.

    The background is the border's median grey. The garment is whatever differs from it: if more of
    the picture is darker than the background than lighter (a dark coat on white, or on mid-grey), the
    picture is inverted first, so that the garment comes out light on black, as Fashion-MNIST draws it.

    Raises ValueError, in words a person can act on, for an image of one colour or one where nothing
    stands out from the background: there is no garment in it to classify.
    """
    if float(pixels.max() - pixels.min()) < MIN_CONTRAST:
        raise InvalidValue("the image is blank (a single colour); there is no garment to classify")
    background = float(np.median(_border(pixels)))
    darker = float(np.clip(background - pixels - MIN_CONTRAST, 0, None).sum())
    lighter = float(np.clip(pixels - background - MIN_CONTRAST, 0, None).sum())
    if darker > lighter:
        pixels, background = 255.0 - pixels, 255.0 - background
    pixels = np.clip(pixels - background, 0, None)
    if float(pixels.max()) < MIN_CONTRAST:
        raise InvalidValue(
            f"the image is blank: nothing in it stands out from its background (grey level "
            f"{background:.0f} at the border); there is no garment to classify"
        )
    pixels *= 255.0 / float(pixels.max())
    rows, cols = np.nonzero(pixels > 0.1 * 255)
    pixels = pixels[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    height, width = pixels.shape
    scale = SIDE / max(height, width)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray(pixels.astype(np.uint8)).resize(new_size, Image.Resampling.LANCZOS)
    canvas = np.zeros((SIDE, SIDE), dtype=np.uint8)
    top, left = (SIDE - new_size[1]) // 2, (SIDE - new_size[0]) // 2
    canvas[top : top + new_size[1], left : left + new_size[0]] = np.asarray(resized)
    return canvas


def _border(pixels: np.ndarray) -> np.ndarray:
    return np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
