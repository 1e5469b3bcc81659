"""Peak memory of decoding hostile uploads under the service's decode budget (docs/search.md, Limits).

Each upload is decoded in a fresh process (``search.query.load_image`` with the limits ``create_app``
derives from the upload limit, and with the decoder's own caps, the service's limits before the
budget); the figure is that process's peak RSS (VmHWM, reset before decoding; Linux) over its RSS
before.
Prints one JSON object. Run: .venv/bin/python bench/bench_upload_memory.py [--upload-mb 8]
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import multiprocessing

import numpy as np


def gzipped_fits(side: int) -> bytes:
    from astropy.io import fits

    buf = io.BytesIO()
    fits.PrimaryHDU(np.zeros((side, side), np.float64)).writeto(buf)
    return gzip.compress(buf.getvalue(), 9)


def big_png(width: int, height: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (width, height)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _decode(data: bytes, pixels: int, gunzip: int, out) -> None:
    from galaxalign.search import query as q

    with open("/proc/self/clear_refs", "w") as fh:  # Linux: the peak (VmHWM) restarts from the current RSS
        fh.write("5")
    before = _status_kb("VmRSS")
    try:
        q.load_image(data, pixels, "upload", gunzip)
        result = "decoded"
    except ValueError as exc:
        result = str(exc)[:100]
    out.put(((_status_kb("VmHWM") - before) / 1024, result))


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field + ":"))


def peak_mb(data: bytes, pixels: int, gunzip: int) -> tuple[float, str]:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    p = ctx.Process(target=_decode, args=(data, pixels, gunzip, out))
    p.start()
    value = out.get()
    p.join()
    return value


def main() -> None:
    from galaxalign.datasets.images import MAX_GUNZIP_BYTES, MAX_IMAGE_PIXELS
    from galaxalign.serve.app import DECODE_PIXELS_PER_UPLOAD_BYTE, GUNZIP_BYTES_PER_UPLOAD_BYTE

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upload-mb", type=float, default=8)
    args = ap.parse_args()
    upload = int(args.upload_mb * 1024 * 1024)
    budget = (min(MAX_IMAGE_PIXELS, DECODE_PIXELS_PER_UPLOAD_BYTE * upload), GUNZIP_BYTES_PER_UPLOAD_BYTE * upload)
    unbounded = (MAX_IMAGE_PIXELS, MAX_GUNZIP_BYTES)  # the decoder's own caps (the service's before the budget)
    cases = {"gzipped FITS bomb": gzipped_fits(8200), "24-megapixel PNG": big_png(6000, 4000),
             "2-megapixel PNG": big_png(1600, 1250)}
    report = {"upload_limit_bytes": upload, "budget": {"pixels": budget[0], "gunzip_bytes": budget[1]}}
    for name, data in cases.items():
        report[name] = {"upload_kb": round(len(data) / 1024, 1)}
        for label, (pixels, gunzip) in (("budget", budget), ("decoder caps", unbounded)):
            mb, result = peak_mb(data, pixels, gunzip)
            report[name][label] = {"peak_rss_growth_mb": round(mb, 1), "result": result}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
