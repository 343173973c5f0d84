import numpy as np
import pytest
from PIL import Image

from fashion_mlp.images import load_image


def draw(path, size=(120, 80), background=(255, 255, 255), garment=(20, 30, 200), mode="RGB"):
    img = Image.new(mode, size, background)
    pixels = np.asarray(img).copy()
    pixels[20:60, 30:90] = garment  # a wide dark block on a light page
    Image.fromarray(pixels).save(path)


def test_a_dark_garment_on_white_becomes_light_on_black_and_centred(tmp_path):
    draw(tmp_path / "shirt.png")
    image = load_image(tmp_path / "shirt.png")
    assert image.shape == (28, 28) and image.dtype == np.uint8
    assert image[0].max() < 30 and image[-1].max() < 30  # dark background above and below
    assert image.max() > 200  # bright garment
    rows, cols = np.nonzero(image > 128)
    assert cols.min() <= 1 and cols.max() >= 26  # the longer side fills the frame
    assert abs(rows.mean() - 13.5) < 1.5  # centred


def test_jpeg_rgba_and_dark_backgrounds(tmp_path):
    draw(tmp_path / "a.jpg")
    draw(tmp_path / "b.png", background=(0, 0, 0, 0), garment=(200, 200, 200, 255), mode="RGBA")
    draw(tmp_path / "c.png", background=(0, 0, 0), garment=(240, 240, 240))
    for name in ("a.jpg", "b.png", "c.png"):
        image = load_image(tmp_path / name)
        assert image[0].max() < 40 and image.max() > 200, name


def test_unreadable_and_missing_images_are_named(tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ValueError, match="notes.png: not a readable PNG or JPEG"):
        load_image(tmp_path / "notes.png")
    with pytest.raises(FileNotFoundError, match="no such image"):
        load_image(tmp_path / "none.png")
