"""Uploaded bytes -> the pixel values a model's image input wants, with Pillow (a well-kept decoder of every common
format, with guards against decompression bombs). Every rejection is a WebError with a 4xx status.

Grayscale inputs are treated as handwriting, the way the digit data sets were made: ink is high and the background
0 (dark ink on light paper is inverted), the ink's bounding box is cut out, scaled (aspect kept) and centred.
scikit-learn's 8x8 digits were size-normalised to a 32x32 bitmap whose height the digit fills, then each 4x4 block's
ink pixels were counted (0..16): an 8x8 input is made the same way. Larger inputs follow MNIST's convention (the
digit fits a box 20/28 of the image, centred). RGB inputs are resized whole (no cropping, no inversion).
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from tfship.web.model_client import ImageInput, WebError

FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")
MAX_PIXELS = 40_000_000  # a 40-megapixel photo is fine; a decompression bomb is not
INK_THRESHOLD = 48  # of 255, after inversion: fainter than this is background
SUPERSAMPLE = 4  # 8x8 digits: counted over 4x4 blocks of a 32x32 bitmap
MNIST_DIGIT_BOX = 20 / 28
WORKING_SIZE = 512


def decode(data: bytes, filename: str = "upload") -> Image.Image:
    """The uploaded image, decoded and upright, or a WebError saying what is wrong with the file."""
    if not data:
        raise WebError(f"'{filename}' is empty (0 bytes)", "choose an image file (PNG or JPEG)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
            if image.width * image.height > MAX_PIXELS:
                raise WebError(f"'{filename}' is {image.width}x{image.height} pixels, more than {MAX_PIXELS:,}",
                               "scale the image down", status=413)
            image.draft(None, (WORKING_SIZE, WORKING_SIZE))  # JPEG: decode at a reduced scale (much faster)
            image.load()
            return ImageOps.exif_transpose(image)
    except WebError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise WebError(f"'{filename}' is not an image this page can read",
                       f"upload one of {', '.join(FORMATS)}", status=415)
    except (OSError, SyntaxError, ValueError, EOFError) as error:  # truncated or corrupt image data
        raise WebError(f"'{filename}' is a damaged image ({error})", "upload the file again or re-save it",
                       status=422)


def on_white(image: Image.Image) -> Image.Image:
    """RGB with transparency flattened onto white (a drawing with a transparent background is ink on paper)."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def to_model_input(image: Image.Image, spec: ImageInput, filename: str = "upload") -> list[float]:
    """Flattened pixel values in the layout of `spec` (row-major, channels last), scaled 0..spec.pixel_max."""
    rgb = on_white(image)
    if spec.channels == 3:
        resized = rgb.resize((spec.width, spec.height), Image.Resampling.LANCZOS)
        return [value * spec.pixel_max / 255 for value in resized.tobytes()]  # RGB interleaved, row-major
    rgb.thumbnail((WORKING_SIZE, WORKING_SIZE))  # a photo's detail beyond this changes nothing at 8x8 or 28x28
    ink = ink_high(rgb.convert("L"))
    box = ink.point(lambda value: 255 if value >= INK_THRESHOLD else 0).getbbox()
    if box is None:
        raise WebError(f"'{filename}' is blank: no digit found", "draw or upload a digit with visible strokes",
                       status=422)
    digit = ink.crop(box)
    if (spec.height, spec.width) == (8, 8):
        placed = place(digit, 8 * SUPERSAMPLE, 8 * SUPERSAMPLE, fill=1.0)
        small = placed.reduce(SUPERSAMPLE)  # the mean of each 4x4 block, as counting its ink pixels
    else:
        small = place(digit, spec.height, spec.width, fill=MNIST_DIGIT_BOX)
    return [value * spec.pixel_max / 255 for value in small.tobytes()]


def ink_high(gray: Image.Image) -> Image.Image:
    """Light ink on a dark background: inverted when the border (the paper) is mostly light."""
    width, height = gray.size
    border = [gray.getpixel((x, y)) for x in range(width) for y in (0, height - 1)]
    border += [gray.getpixel((x, y)) for y in range(height) for x in (0, width - 1)]
    border.sort()
    return ImageOps.invert(gray) if border[len(border) // 2] > 127 else gray


def place(digit: Image.Image, height: int, width: int, fill: float) -> Image.Image:
    """The digit scaled (aspect kept) to fill `fill` of a height x width black image, centred."""
    scale = min(height * fill / digit.height, width * fill / digit.width)
    size = (max(1, round(digit.width * scale)), max(1, round(digit.height * scale)))
    scaled = digit.resize(size, Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR)
    canvas = Image.new("L", (width, height), 0)
    canvas.paste(scaled, ((width - size[0]) // 2, (height - size[1]) // 2))
    return canvas
