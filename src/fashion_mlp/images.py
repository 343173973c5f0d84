"""Turn a user's photo or drawing (PNG/JPEG, any size or colour) into a Fashion-MNIST-like input.

Fashion-MNIST shows a light garment on a black background, trimmed to the garment, scaled so its
longer side fills the 28-pixel frame, and centred. We do the same, inverting a light background.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

SIDE = 28
MAX_PIXELS = 50_000_000  # refuse decompression bombs
MIN_CONTRAST = 8.0  # grey levels between the darkest and lightest pixel; less is a blank image


def load_image(path: str | Path) -> np.ndarray:
    """A uint8 (28, 28) image: grayscale, dark background, garment trimmed and centred."""
    path = Path(path)
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with Image.open(path) as img:
            img.load()
            pixels = _grayscale(img)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such image file") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError, SyntaxError, EOFError,
            struct.error, IndexError) as err:  # fmt: skip
        # Pillow's decoders raise SyntaxError for a broken PNG chunk (found by fuzzing), struct.error and
        # IndexError for truncated headers, EOFError for a truncated file.
        raise ValueError(f"{path}: not a readable PNG or JPEG image ({err})") from None
    try:
        return to_fashion_mnist(pixels)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


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

    Raises ValueError for an image of one colour: there is no garment in it to classify.
    """
    if float(pixels.max() - pixels.min()) < MIN_CONTRAST:
        raise ValueError("the image is blank (a single colour); there is no garment to classify")
    if np.median(_border(pixels)) > 127:  # light background: invert so the garment is light on dark
        pixels = 255.0 - pixels
    pixels = np.clip(pixels - float(np.median(_border(pixels))), 0, None)
    pixels *= 255.0 / max(float(pixels.max()), 1e-6)
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
