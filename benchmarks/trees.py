"""Running a benchmark's worker against another tree's src/, for side-by-side measurements
(preprocess_speed.py, preprocess_identity.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def run_worker(src: str, script: str, worker_args: list[str]) -> dict:
    """Run `python SCRIPT --worker WORKER_ARGS...` with PYTHONPATH=src and return the JSON object
    on the last line of its output.

    Raises:
        SystemExit: the worker failed (its stderr is shown).
    """
    env = dict(os.environ, PYTHONPATH=src)
    done = subprocess.run([sys.executable, script, "--worker", *worker_args], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"worker for {src} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])
