"""Mode U encoder time: compress the first 500 MNIST test digits in one file at t = 0.1 and 0.3.

    OMP_NUM_THREADS=1 python benchmarks/encoder_time.py LABEL RUN [DATA_ROOT]

Prints one JSON line per stop time: the label, seconds (the ideal rate off: coding only), actual
bits per image and the PFR's exactness. Run with another checkout's ``src`` on ``PYTHONPATH`` to
time that version on the same run, alternating the two (benchmarks/RESULTS.md section 11).
"""

import json
import sys
import time

from ldcodec.checkpoint import load_model
from ldcodec.codecs import model_codec
from ldcodec.data import load_split, to_tensor


def main() -> None:
    label, run = sys.argv[1], sys.argv[2]
    data_root = sys.argv[3] if len(sys.argv) > 3 else None
    model, _, _ = load_model(run)
    codec = model_codec(model, run)
    codec.ideal = False
    x = to_tensor(load_split("mnist", "test", data_root, limit=500)[0])
    for t in (0.1, 0.3):
        start = time.perf_counter()
        c = codec.compress(x, {"t_stop": t})
        seconds = time.perf_counter() - start
        print(json.dumps({"code": label, "t_stop": t, "seconds": round(seconds, 2),
                          "actual": codec.actual_bits(c, codec.frame(c)), "exactness": c.extra["exactness"]}),
              flush=True)


if __name__ == "__main__":
    main()
