"""What the container costs: bits_actual (one file for a set) against bits_file (one file per image).

For the Pillow codecs at their default quality sweeps on real test images: the actual rate of a
set framed in one format 2 file (bytes shared by every image's file stored once), the rate of
each image alone in its own file, and a constant mid-grey image alone. One JSON line per point.

    python benchmarks/framing.py --data-root ../shared/data --n 500 > benchmarks/results/framing-cpu.jsonl
"""

from __future__ import annotations

import argparse
import json

import torch

from ldcodec.codecs import get_codec
from ldcodec.data import load_split, to_tensor


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--datasets", default="mnist,cifar10")
    a = p.parse_args()
    for dataset in a.datasets.split(","):
        x = to_tensor(load_split(dataset, "test", a.data_root, limit=a.n)[0])
        _, c, h, w = x.shape
        grey = torch.full((1, c, h, w), 128 / 255)
        for name in ("jpeg", "webp", "avif"):
            cls = get_codec(name)
            if not cls.available():
                continue
            codec = cls((c, h, w))
            for rate in codec.default_rates():
                comp = codec.compress(x, rate)
                actual = codec.actual_bits(comp, codec.frame(comp))
                lone = codec.compress(grey, rate).file_bits[0]
                print(json.dumps({"dataset": dataset, "images": len(x), "codec": name, **rate,
                                  "bpp_actual": round(actual / (h * w), 4),
                                  "bpp_file": round(float(comp.file_bits.mean()) / (h * w), 4),
                                  "saved_bytes_per_image": round(float(comp.file_bits.mean() - actual) / 8, 1),
                                  "grey_image_file_bytes": int(lone // 8)}), flush=True)


if __name__ == "__main__":
    main()
