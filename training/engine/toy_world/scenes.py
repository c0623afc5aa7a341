"""The toy world's two looks of one content space: "photographs" and "stickers".

Content is (count, colour, shape): one to three circles, squares or triangles of one of four
colours, and a caption names exactly that ("two red circles"). A *photograph* puts shaded shapes
on a cluttered, textured background; a *sticker* draws the same content with flat colours and a
thick dark outline on white. Everything is a pure function of a seed, so the world is rebuilt
bit for bit.

Some content combinations are held out of every training set (`is_held_out`): the toy CLIP's text
alignment is measured on captions it never saw, and the sticker set covers only part of the
content space, which is what lets a style fine-tune trade prompt alignment for style.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPES = ("circle", "square", "triangle")
COLOURS = {
    "red": (215, 45, 40),
    "green": (45, 170, 70),
    "blue": (45, 85, 215),
    "yellow": (240, 205, 35),
}
COUNTS = {1: "a", 2: "two", 3: "three"}
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles"}
OUTLINE = (25, 25, 25)


@dataclass(frozen=True)
class Content:
    count: int
    colour: str
    shape: str

    @property
    def caption(self) -> str:
        noun = self.shape if self.count == 1 else PLURAL[self.shape]
        return f"{COUNTS[self.count]} {self.colour} {noun}"

    @property
    def category(self) -> str:
        return self.shape


def all_contents() -> list[Content]:
    return [
        Content(count, colour, shape)
        for count, colour, shape in itertools.product(COUNTS, COLOURS, SHAPES)
    ]


def is_held_out(content: Content) -> bool:
    """Six of the 36 combinations, spread so every count, colour and shape stays seen."""
    c = list(COLOURS).index(content.colour)
    s = SHAPES.index(content.shape)
    return (c + 2 * s + content.count) % 6 == 0


def in_sticker_set(content: Content) -> bool:
    """The sticker references show single shapes in two colours only: a narrow content range."""
    return content.count == 1 and content.colour in ("red", "blue") and not is_held_out(content)


def _boxes(count: int, size: int, rng: np.random.Generator) -> list[tuple[int, int, int, int]]:
    """Non-overlapping squares for the shapes, left to right so counts stay readable."""
    side = int(size * (0.5 if count == 1 else 0.36 if count == 2 else 0.28))
    slots = np.linspace(0, size - side, count + 2)[1:-1] if count > 1 else [(size - side) / 2]
    boxes = []
    for x in slots:
        jitter_x = int(rng.integers(-1, 2))
        y = int(rng.integers(size // 8, max(size // 8 + 1, size - side - size // 8)))
        left = int(np.clip(x + jitter_x, 0, size - side))
        boxes.append((left, y, left + side, y + side))
    return boxes


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    shape: str,
    box: tuple[int, int, int, int],
    fill: tuple[int, ...],
    outline: tuple[int, ...] | None,
    width: int,
) -> None:
    left, top, right, bottom = box
    if shape == "circle":
        draw.ellipse(box, fill=fill, outline=outline, width=width)
    elif shape == "square":
        draw.rectangle(box, fill=fill, outline=outline, width=width)
    else:
        triangle = [((left + right) // 2, top), (right, bottom), (left, bottom)]
        draw.polygon(triangle, fill=fill, outline=outline, width=width)


def photograph(content: Content, seed: int, size: int = 32) -> Image.Image:
    """Shaded shapes on a textured, cluttered background of muted colours."""
    rng = np.random.default_rng([seed, 1])
    base = rng.integers(70, 190, 3)
    ramp = np.linspace(-30, 30, size)
    angle = rng.uniform(0, np.pi)
    field = np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]
    pixels = base[None, None, :] + field[..., None] + rng.normal(0, 14, (size, size, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 7))):  # clutter: muted strokes and blobs
        muted = tuple(int(v) for v in rng.integers(60, 170, 3))
        x0, y0 = (int(v) for v in rng.integers(0, size, 2))
        x1, y1 = x0 + int(rng.integers(3, size // 2)), y0 + int(rng.integers(1, size // 3))
        if rng.random() < 0.5:
            draw.line((x0, y0, x1, y1), fill=muted, width=int(rng.integers(1, 3)))
        else:
            draw.ellipse((x0, y0, x1, y1), fill=muted)
    image = image.filter(ImageFilter.GaussianBlur(0.6))
    draw = ImageDraw.Draw(image)
    colour = np.array(COLOURS[content.colour])
    for box in _boxes(content.count, size, rng):
        shade = np.clip(colour * rng.uniform(0.75, 1.0) + rng.normal(0, 8, 3), 0, 255)
        _draw_shape(draw, content.shape, box, tuple(int(v) for v in shade), None, 0)
        highlight = tuple(int(v) for v in np.clip(shade + 45, 0, 255))
        left, top, right, bottom = box
        inset = (right - left) // 3
        if content.shape != "triangle" and inset > 1:
            _draw_shape(
                draw,
                content.shape,
                (left + 1, top + 1, left + inset, top + inset),
                highlight,
                None,
                0,
            )
    return image


def sticker(content: Content, seed: int, size: int = 32) -> Image.Image:
    """Flat colours, a thick dark outline, a white background."""
    rng = np.random.default_rng([seed, 2])
    image = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    width = max(2, size // 14)
    for box in _boxes(content.count, size, rng):
        _draw_shape(draw, content.shape, box, COLOURS[content.colour], OUTLINE, width)
    return image
