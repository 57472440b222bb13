"""Nine EXIF-dated camera-trap pictures for the README's walkthrough and its test: three bursts
of three, a second apart, ten minutes between bursts, with "animals" the toy colour-blocks
detector sees (red, green and blue blocks of 128 x 96 px at multiples of 64 px across, 48 down).

    python -m tools.trap_pictures FOLDER     # FOLDER/IMG_0001.JPG ... IMG_0009.JPG
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import ExifTags, Image, ImageDraw

#: (time of the burst, [(colour, left x)]): a red animal, then a red and a blue one, then none.
BURSTS = [("06:00", [("red", 128)]), ("06:10", [("red", 192), ("blue", 384)]), ("06:20", [])]
COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
SIZE = (640, 480)
#: Each animal walks 64 px to the right between two pictures of a burst.
STEP_PX = 64


def write(folder: Path) -> list[Path]:
    """The nine pictures in ``folder`` (made if missing), EXIF DateTimeOriginal 2024-05-01."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for minute, blocks in BURSTS:
        for second in range(3):
            picture = Image.new("RGB", SIZE, (60, 60, 60))
            draw = ImageDraw.Draw(picture)
            for colour, x in blocks:
                x += STEP_PX * second
                draw.rectangle([x, 192, x + 127, 287], fill=COLOURS[colour])
            exif = Image.Exif()
            exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = (
                f"2024:05:01 {minute}:{second:02d}"
            )
            path = folder / f"IMG_{len(written) + 1:04d}.JPG"
            picture.save(path, quality=95, exif=exif)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m tools.trap_pictures FOLDER", file=sys.stderr)
        return 2
    for path in write(Path(args[0])):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
