"""The training loader's JPEG decoders (``train/data/jpeg.py``): CPU ms per decode, opencv against
simplejpeg, at full size and at each DCT-domain reduction.

What is compared, and why: the issue asks for "optional faster JPEG decoding where a maintained
wheel gives it (e.g. simplejpeg), chosen at run time, with identical output or a documented
tolerance". The loader decodes a stored JPEG at 1/f (f = 1, 2, 4, 8,
``transforms.reduced_decode_factor``); this script times every factor on JPEGs of real frames
written as the ingest writes them (``shards.codec.encode_image``, quality 95, 4:2:0):

* ``kitti``: the KITTI fixture frame 000000 (1224x370);
* ``a2d2``: the A2D2 fixture camera frame (1920x1208);
* ``cityscapes``: the real-size 2048x1024 frame that ``bench/ingest_cityscapes.py`` builds (the
  only real Cityscapes fixture is downscaled to 256x128: it is upscaled x8 with 0.5 grey levels
  of noise);
* ``a2d2_512``: the A2D2 frame downscaled to 512 px on its long side (``INTER_AREA``, 512x322).

Cases, for each image and factor:

* ``opencv``: ``decode_jpeg(..., backend="opencv")``, the loader's path (``cv2.imdecode``;
  ``IMREAD_COLOR_RGB`` at full size, ``IMREAD_REDUCED_COLOR_<f>`` + BGR -> RGB below);
* ``simplejpeg``: ``decode_jpeg(..., backend="simplejpeg")`` (libjpeg-turbo's accurate defaults;
  its output is compared with opencv's, and must be identical);
* ``fast``: ``simplejpeg.decode_jpeg(fastdct=True, fastupsample=True)`` at the same scale, for
  information only: its pixels differ (max |difference| printed), so no backend uses it.

One OpenCV thread (``cv2.setNumThreads(1)``), CPU time of the process (``bench/common.py``). In
each of ``--rounds`` rounds every case decodes a block of as many images as fill ``--block-ms``,
the cases interleaved and their order rotating; reported are the median CPU ms per decode and
the ratio opencv / case paired round by round (median and quartiles), which a burst of load
from other work on a shared machine moves far less than a best-of over separate loops (the
differences here are a few per cent). Prints, never asserts on speed.

Run: ``.venv/bin/python bench/jpeg.py`` (defaults: 31 rounds of 20 ms blocks).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/common.py, the ingest benches
import common  # noqa: E402
import ingest_a2d2  # noqa: E402
import ingest_cityscapes  # noqa: E402

from mtl_data.shards.codec import encode_image  # noqa: E402
from mtl_data.train.data import jpeg  # noqa: E402
from mtl_data.train.data.jpeg import FACTORS, decode_jpeg  # noqa: E402

CASES = ("opencv", "simplejpeg", "fast")


def read_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file."""
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def images(fixtures: Path) -> dict[str, bytes]:
    """name -> the JPEG bytes of each image of the module docstring."""
    kitti = read_rgb(fixtures / "kitti" / "object" / "training" / "image_2" / "000000.png")
    a2d2 = read_rgb(ingest_a2d2.fixture_paths(fixtures)["camera"])
    with tempfile.TemporaryDirectory() as tmp:
        files = ingest_cityscapes.build_frame(ingest_cityscapes.fixture_paths(fixtures), Path(tmp) / "cs", 0.5, 0.002)
        cityscapes = read_rgb(files["image"])
    long_side = 512
    small = cv2.resize(
        a2d2, (long_side, round(a2d2.shape[0] * long_side / a2d2.shape[1])), interpolation=cv2.INTER_AREA
    )
    rgb = {"kitti": kitti, "a2d2": a2d2, "cityscapes": cityscapes, f"a2d2_{long_side}": small}
    return {name: encode_image(image, "jpg", 95) for name, image in rgb.items()}


def fast_decode(data: bytes, factor: int) -> np.ndarray:
    """simplejpeg with ``fastdct`` and ``fastupsample`` at exactly 1/``factor`` (these images are large)."""
    h, w, _, _ = jpeg.simplejpeg.decode_jpeg_header(data)
    size = {} if factor == 1 else {"min_height": math.ceil(h / factor), "min_width": math.ceil(w / factor)}
    return jpeg.simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True, fastupsample=True, **size)


def decoders(data: bytes, factor: int) -> dict[str, object]:
    """case -> a call decoding ``data`` at 1/``factor``."""
    return {
        "opencv": lambda: decode_jpeg(data, factor, "opencv"),
        "simplejpeg": lambda: decode_jpeg(data, factor, "simplejpeg"),
        "fast": lambda: fast_decode(data, factor),
    }


def time_cases(calls: dict[str, object], rounds: int, block_s: float) -> dict[str, list[float]]:
    """case -> CPU seconds per call in each round: a block of decodes filling ``block_s`` per case
    and round, the cases interleaved (their order rotating), so that load from other work on the
    machine falls on every case of a round alike."""
    n = {}
    for name, call in calls.items():  # one untimed call each (first-call costs), then the block size
        call()
        n[name] = max(1, round(block_s / max(common.measure(call).cpu, 1e-6)))
    names = list(calls)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            block = [calls[name]] * n[name]
            times[name].append(common.measure(lambda block=block: [call() for call in block]).per(len(block)).cpu)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=31, help="rounds of every case; medians are reported")
    ap.add_argument("--block-ms", type=float, default=20.0, help="CPU ms of decoding per case and round")
    ap.add_argument("--fixtures", type=Path, default=common.default_fixtures())
    args = ap.parse_args()
    if jpeg.simplejpeg is None:
        sys.exit(f"error: simplejpeg is not installed: {jpeg.INSTALL_HINT}")
    cv2.setNumThreads(1)

    rows, identical = [], True
    for name, data in images(args.fixtures).items():
        for factor in FACTORS:
            out = {case: call() for case, call in decoders(data, factor).items()}
            same = np.array_equal(out["opencv"], out["simplejpeg"])
            identical &= same
            fast_diff = int(np.abs(out["opencv"].astype(np.int16) - out["fast"]).max())
            times = {
                k: np.array(v) for k, v in time_cases(decoders(data, factor), args.rounds, args.block_ms / 1000).items()
            }
            ms = {k: 1000 * float(np.median(v)) for k, v in times.items()}
            # opencv / case, paired round by round: its median and quartiles
            x = {k: np.percentile(times["opencv"] / times[k], [25, 50, 75]) for k in ("simplejpeg", "fast")}
            rows.append((name, len(data), factor, out["opencv"].shape, ms, x, same, fast_diff))

    print(
        f"JPEG decode, CPU ms per image (median of {args.rounds} rounds), one thread; opencv {cv2.__version__}, "
        f"simplejpeg {jpeg.simplejpeg.__version__}"
    )
    print("x = opencv / case, CPU time, paired round by round: median [quartiles]")
    print(
        f"{'image':<12}{'kB':>5}{'f':>3}{'decoded':>11}{'opencv':>8}{'simplejpeg':>11}{'x':>6}{'[q1 - q3]':>14}"
        f"{'fast':>8}{'x':>6}  identical  fast max|diff|"
    )
    for name, size, factor, shape, ms, x, same, fast_diff in rows:
        q1, med, q3 = x["simplejpeg"]
        print(
            f"{name:<12}{size / 1000:5.0f}{factor:3d}{f'{shape[0]}x{shape[1]}':>11}{ms['opencv']:8.3f}"
            f"{ms['simplejpeg']:11.3f}{med:6.2f}{f'[{q1:.2f} - {q3:.2f}]':>14}{ms['fast']:8.3f}{x['fast'][1]:6.2f}"
            f"  {'yes' if same else 'NO':<9}  {fast_diff}"
        )
    print("opencv / simplejpeg, CPU time, geometric mean over the images of the medians:")
    for factor in FACTORS:
        ratios = [x["simplejpeg"][1] for _, _, f, _, _, x, *_ in rows if f == factor]
        print(f"  opencv / simplejpeg, factor {factor}  {math.exp(np.mean(np.log(ratios))):.2f}x")
    print(f"simplejpeg output identical to opencv at every factor: {'yes' if identical else 'NO'}")
    print(f"decode_jpeg(backend='auto') uses: {jpeg.resolve_backend('auto')}")
    print(f"command: {common.command_line()}")


if __name__ == "__main__":
    main()
