"""Running a benchmark's worker or `digitnet serve` against another tree's src/, for
side-by-side measurements (preprocess_speed.py, preprocess_identity.py, serve_latency.py)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator


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


@contextlib.contextmanager
def served(src: str, serve_args: list[str], timeout_s: float = 120
           ) -> Iterator[tuple[int, int]]:
    """`python -m digitnet serve SERVE_ARGS... --port 0` with PYTHONPATH=src, as a user starts it
    (that tree's flags and defaults); yields the port it listens on and its process id, then
    stops it (SIGINT).

    Raises:
        SystemExit: the server printed no address within `timeout_s` (its output is shown).
    """
    env = dict(os.environ, PYTHONPATH=src)
    # output into a file, never a pipe that fills up and blocks the server
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen([sys.executable, "-m", "digitnet", "serve", *serve_args,
                                 "--port", "0"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                text=True)
        try:
            deadline, match = time.monotonic() + timeout_s, None
            while match is None and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
                log.seek(0)
                match = re.search(r"serving .* at http://127\.0\.0\.1:(\d+)/", log.read())
            if match is None:
                log.seek(0)
                raise SystemExit(f"digitnet serve from {src} printed no address:\n"
                                 f"{log.read()[-4000:]}")
            yield int(match.group(1)), proc.pid
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def cpu_seconds(pid: int) -> tuple[float, int] | None:
    """The CPU time (user + system, s) and minor page faults of a process, all its threads
    together, or None off Linux."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    # fields from the state on: minflt is the 8th, utime and stime the 12th and 13th
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), int(fields[7])
