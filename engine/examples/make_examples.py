"""Regenerates the bundled example images (made by the project; CC0). Run: python make_examples.py

content.png: a small synthetic landscape (sky, sun, hills, a house, a lake).
style.png:   a synthetic "painting": bold swirling brush-like strokes in a warm/cool palette.
Deterministic (seeded); no external data.
"""
import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def content(w=256, h=192):
    y = np.linspace(0, 1, h)[:, None]
    sky = np.stack([0.35 + 0.4 * y, 0.55 + 0.35 * y, 0.95 - 0.1 * y], -1) * np.ones((h, w, 1))
    img = Image.fromarray((sky * 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    d.ellipse([180, 20, 225, 65], fill=(250, 220, 90))
    d.polygon([(0, 120), (60, 80), (130, 115), (200, 70), (256, 105), (256, 192), (0, 192)], fill=(60, 130, 60))
    d.polygon([(0, 150), (90, 125), (256, 145), (256, 192), (0, 192)], fill=(40, 100, 45))
    d.rectangle([40, 105, 95, 150], fill=(180, 70, 50))
    d.polygon([(34, 107), (67, 80), (101, 107)], fill=(110, 40, 35))
    d.rectangle([60, 125, 75, 150], fill=(70, 45, 30))
    d.rectangle([45, 112, 56, 122], fill=(230, 230, 160))
    d.ellipse([120, 160, 250, 190], fill=(70, 120, 190))
    for i, x in enumerate(range(140, 250, 22)):
        d.line([(x, 150), (x, 120 - 5 * (i % 3))], fill=(90, 60, 30), width=3)
        d.ellipse([x - 9, 100 - 5 * (i % 3), x + 9, 125 - 5 * (i % 3)], fill=(30, 90 + 10 * i, 40))
    return img.filter(ImageFilter.SMOOTH)


def style(w=192, h=192, seed=1889):
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (w, h), (20, 40, 90))
    d = ImageDraw.Draw(img)
    palette = [(240, 200, 60), (30, 70, 160), (90, 140, 210), (250, 240, 180), (20, 30, 70), (200, 120, 40)]
    for _ in range(900):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(6, 30)
        a0 = rng.uniform(0, 2 * np.pi)
        col = palette[rng.integers(len(palette))]
        pts = [(cx + r * np.cos(a0 + t) * (1 + 0.1 * t), cy + r * np.sin(a0 + t) * (1 + 0.1 * t))
               for t in np.linspace(0, rng.uniform(1, 3), 8)]
        d.line(pts, fill=col, width=int(rng.integers(2, 5)))
    return img.filter(ImageFilter.SMOOTH_MORE)


if __name__ == "__main__":
    content().save("content.png", optimize=True)
    style().save("style.png", optimize=True)
