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


@pytest.mark.parametrize(
    "size, colour", [((50, 50), (255, 255, 255)), ((1, 1), (0, 0, 0)), ((40, 30), (90, 90, 90))]
)
def test_a_blank_image_is_refused_rather_than_guessed(tmp_path, size, colour):
    Image.new("RGB", size, colour).save(tmp_path / "blank.png")
    with pytest.raises(ValueError, match="blank.png: the image is blank"):
        load_image(tmp_path / "blank.png")


def test_a_16_bit_and_a_palette_image_are_read(tmp_path):
    pixels = np.zeros((60, 40), dtype=np.uint16)
    pixels[10:50, 10:30] = 4_000  # well above 255: scaled, not clipped to a white silhouette
    pixels[20:30, 15:25] = 2_000
    Image.fromarray(pixels).save(tmp_path / "deep.png")
    palette = Image.new("P", (40, 40), 0)
    palette.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    palette.paste(1, (10, 5, 30, 35))
    palette.save(tmp_path / "palette.png")
    for name in ("deep.png", "palette.png"):
        image = load_image(tmp_path / name)  # both garments are tall: dark margins left and right
        assert image.max() > 200 and image[:, 0].max() < 40 and image[:, -1].max() < 40, name
    deep = load_image(tmp_path / "deep.png")
    assert 100 < deep[8:13, 12:16].max() < 160  # the 2,000 patch (rows 7-14, columns 11-17) is half as bright


SHAPES = {
    "shirt": lambda h, w: (slice(h // 5, 4 * h // 5), slice(w // 4, 3 * w // 4)),
    "trousers": lambda h, w: (slice(h // 8, 7 * h // 8), slice(2 * w // 5, 3 * w // 5)),
}
PHOTOS = [  # 48 plain photos: garment grey level on background grey level, in three sizes
    (garment, background, side, shape)
    for garment, background in [
        *((g, 100) for g in (0, 30, 60, 90)),  # a dark garment on mid-grey: 12 of these were refused
        *((g, 255) for g in (0, 120)),  # dark on white
        *((g, 0) for g in (160, 255)),  # light on black
    ]
    for side in (28, 100, 400)
    for shape in SHAPES
]


@pytest.mark.parametrize("garment, background, side, shape", PHOTOS)
def test_a_plain_photo_of_a_garment_on_any_background_is_classified(
    tmp_path, garment, background, side, shape
):
    """The garment, whatever its shade against the background, comes out light on black, filling
    the frame's longer side; the background comes out black."""
    pixels = np.full((side, side), background, np.uint8)
    rows, cols = SHAPES[shape](side, side)
    pixels[rows, cols] = garment
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    image = load_image(tmp_path / "photo.png")
    assert image.shape == (28, 28) and image.max() == 255
    assert image[:, 0].max() < 30 and image[:, -1].max() < 30  # black beside it: both are taller than wide
    lit_rows, lit_cols = np.nonzero(image > 128)
    assert lit_rows.max() - lit_rows.min() >= 26 or lit_cols.max() - lit_cols.min() >= 26


def test_a_picture_where_nothing_stands_out_from_the_background_is_refused_in_our_words(tmp_path):
    pixels = np.tile(np.linspace(96, 104, 60), (60, 1)).astype(np.uint8)  # a faint gradient of grey
    Image.fromarray(pixels).save(tmp_path / "grey.png")
    with pytest.raises(ValueError, match=r"grey.png: the image is blank: nothing in it stands out"):
        load_image(tmp_path / "grey.png")
