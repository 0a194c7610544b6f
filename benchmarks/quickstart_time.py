"""Issue 27's timing targets: a shipped model's first compression, and the README's first command.

    python benchmarks/quickstart_time.py [--readme] [-o OUT.json]

In a fresh interpreter (timed from its start): ``import ldcodec``, ``ldcodec.load("mnist-u")``, the
first compression of the first 16 MNIST test digits (the built-in sample) at 64 bits per digit with
its framing, and their mse decode; one JSON line. ``--readme`` also times the README's first command
(``bash scripts/install.sh && .venv/bin/ldcodec quickstart``) in the current directory, which should be
a fresh clone (its ``.venv`` absent); pip's cache (the CPU build of torch) is whatever this machine has.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

FIRST_USE = r"""
import json, time
t0 = time.perf_counter()
import ldcodec
from ldcodec.data import load_split, to_tensor
t1 = time.perf_counter()
codec = ldcodec.load("mnist-u")
t2 = time.perf_counter()
x = to_tensor(load_split("mnist", "test", limit=16)[0])
c = codec.compress(x, {"bits": 64})
data = codec.frame(c)
t3 = time.perf_counter()
y = codec.decompress_file(data, decode="mse")
t4 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_compress_16_s": t3 - t2, "decode_16_s": t4 - t3,
                  "bits_actual": codec.actual_bits(c, data)}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--readme", action="store_true", help="also time the README's first command here (a fresh clone)")
    p.add_argument("-o", "--output", type=Path)
    a = p.parse_args()
    row = {"machine": f"{platform.machine()} CPU, {platform.python_version()}"}
    if a.readme:
        start = time.perf_counter()
        subprocess.run(["bash", "scripts/install.sh"], check=True, capture_output=True)
        row["install_s"] = time.perf_counter() - start
        start = time.perf_counter()
        subprocess.run([".venv/bin/ldcodec", "quickstart"], check=True, capture_output=True)
        row["quickstart_s"] = time.perf_counter() - start
        row["readme_first_command_s"] = row["install_s"] + row["quickstart_s"]
        python = ".venv/bin/python"
    else:
        python = sys.executable
    out = subprocess.run([python, "-c", FIRST_USE], check=True, capture_output=True, text=True)
    row.update(json.loads(out.stdout.splitlines()[-1]))
    row = {k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}
    print(json.dumps(row))
    if a.output:
        with a.output.open("a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
