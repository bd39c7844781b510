"""Run a bench script with TensorFlow's oneDNN off and on, alternating, in one run (JSON).

TensorFlow reads ``TF_ENABLE_ONEDNN_OPTS`` when it loads, so each setting runs as a child
process. The settings alternate (0, 1, 0, 1, ...) so that a load change on the shared machine
hits both alike; the JSON holds every child's own JSON output per setting, in run order.

    python bench/onednn.py [--rounds 1] bench/forward.py [its arguments ...]
    python bench/onednn.py bench/train_step.py --steps 8
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=1, help="runs per setting")
    p.add_argument("script", help="a bench script that prints one JSON object")
    p.add_argument("args", nargs=argparse.REMAINDER)
    a = p.parse_args()
    out: dict = {"script": a.script, "args": a.args, "cpu_count": os.cpu_count(), "onednn_0": [], "onednn_1": []}
    for _ in range(a.rounds):
        for value in ("0", "1"):
            env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": value, "TF_CPP_MIN_LOG_LEVEL": "2"}
            start = time.monotonic()
            proc = subprocess.run([sys.executable, a.script, *a.args], env=env, capture_output=True, text=True)
            entry = {"wall_s": round(time.monotonic() - start, 1), "returncode": proc.returncode}
            text = proc.stdout.strip()
            try:
                entry["result"] = json.loads(text[text.index("{"):])
            except ValueError:
                entry["stderr"] = proc.stderr.strip().splitlines()[-3:]
            out[f"onednn_{value}"].append(entry)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
