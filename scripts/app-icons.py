"""Draw the customer app's icons once (the favicon's car, white on the brand blue) with Pillow:
192 and 512 px, and a maskable 512 px whose car stays inside the safe zone (the middle 80 %)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

BRAND = (11, 95, 255, 255)
WHITE = (255, 255, 255, 255)
OUT = Path(__file__).resolve().parent.parent / "src/caas/web/static/icons"


def draw(size: int, *, maskable: bool) -> Image.Image:
    # Drawn at 4x and scaled down: smooth edges without a vector library.
    big = size * 4
    image = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    pen = ImageDraw.Draw(image)
    if maskable:
        pen.rectangle((0, 0, big, big), fill=BRAND)
    else:
        pen.rounded_rectangle((0, 0, big - 1, big - 1), radius=big * 14 // 64, fill=BRAND)
    # The car in the favicon's 64-unit grid, shrunk into the safe zone when maskable.
    scale = big / 64 * (0.72 if maskable else 1.0)
    offset = (big - 64 * scale) / 2

    def at(x: float, y: float) -> tuple[float, float]:
        return (offset + x * scale, offset + y * scale)

    pen.polygon([at(17, 27), at(22, 16), at(42, 16), at(47, 27)], fill=WHITE)
    pen.polygon([at(24, 26), at(26.5, 19.5), at(37.5, 19.5), at(40, 26)], fill=BRAND)
    pen.rounded_rectangle((*at(12, 26), *at(52, 45)), radius=5 * scale, fill=WHITE)
    for left in (17, 41):
        pen.rounded_rectangle((*at(left, 40), *at(left + 6, 51)), radius=3 * scale, fill=WHITE)
    for centre in (19, 45):
        x, y = at(centre, 35.5)
        radius = 3.5 * scale
        pen.ellipse((x - radius, y - radius, x + radius, y + radius), fill=BRAND)
    return image.resize((size, size), Image.Resampling.LANCZOS)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    draw(192, maskable=False).save(OUT / "icon-192.png", optimize=True)
    draw(512, maskable=False).save(OUT / "icon-512.png", optimize=True)
    draw(512, maskable=True).save(OUT / "icon-maskable-512.png", optimize=True)


if __name__ == "__main__":
    main()
