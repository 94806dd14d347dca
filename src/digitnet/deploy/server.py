"""Running `digitnet serve`: the packages it needs, a listening socket, the process's torch
threads and malloc settings, and uvicorn serving the app (deploy/serve.py) on it.

uvicorn is optional (`pip install 'digitnet[serve]'`); it is imported inside `serve`, so this
module imports without it.
"""

import ctypes
import importlib.util
import os
import socket
import sys
from typing import TYPE_CHECKING

from digitnet.config import MAX_THREADS
from digitnet.errors import DigitnetError

if TYPE_CHECKING:
    from fastapi import FastAPI

MAX_CONNECTIONS = 256  # uvicorn answers 503 beyond this many open connections and requests
# torch threads of each forward pass: one image gains nothing from a second (0.35 ms either way
# on an idle core), --max-decodes uploads already run at once, and an OpenMP thread waiting for
# a busy core stalls the pass: in process on the 2 cores shared with 2 other jobs, a drawing's
# forward pass took 40-76 ms p50 with 2 threads, 0.64 ms with 1 (BENCHMARKS.md "Serving")
DEFAULT_THREADS = 1
# glibc's malloc serves blocks this large with mmap, and gives the free top of a thread's heap
# back to the kernel once it passes twice that. It starts at 128 kB and raises both by itself
# whenever it frees a larger mmap block (a photo's arrays), up to these values; a server that had
# only seen drawings stayed low, so each drawing's working arrays (0.3-0.6 MB) were given back and
# faulted in again: ~1,000 page faults and ~1 ms a request on the decode thread (BENCHMARKS.md
# "Serving"). Set from the start to where glibc's own adjustment ends.
MMAP_THRESHOLD = 32 * 2**20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit machines
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD  # as glibc sets it when it raises MMAP_THRESHOLD
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
INSTALL_HINT = "pip install 'digitnet[serve]'"
# import name -> distribution name of what `digitnet serve` needs beyond digitnet itself
SERVE_PACKAGES = {"fastapi": "fastapi", "uvicorn": "uvicorn",
                  "python_multipart": "python-multipart"}


def check_serve_dependencies() -> None:
    """Raises DigitnetError naming the missing packages and how to install them."""
    missing = [dist for module, dist in SERVE_PACKAGES.items()
               if importlib.util.find_spec(module) is None]
    if missing:
        raise DigitnetError(f"digitnet serve needs {', '.join(missing)}, which "
                            f"{'is' if len(missing) == 1 else 'are'} not installed: {INSTALL_HINT}")


def check_port(port: int) -> None:
    """Raises DigitnetError unless `port` is 0 (any free port) to 65535."""
    if not 0 <= port <= 65535:  # getaddrinfo would take 100000 as 100000 % 65536
        raise DigitnetError(f"--port must be 0 to 65535 (0: any free port), got {port}")


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free port).

    Raises:
        DigitnetError: the port is not 0 to 65535, or the address cannot be used (port taken,
            unknown host, no permission).
    """
    check_port(port)
    sock = None
    try:
        family, _, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)[0]
        # proto must say TCP (socket.create_server leaves it 0): asyncio turns Nagle's algorithm
        # off only on such sockets, and with it on, every request on a kept-alive connection
        # waited ~40 ms for the client's delayed ACK (benchmarks/serve_latency.py)
        sock = socket.socket(family, socket.SOCK_STREAM, proto)
        if os.name == "posix":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen()
        return sock
    except OSError as e:
        if sock is not None:
            sock.close()
        why = os.strerror(e.errno) if e.errno and e.errno > 0 else e.strerror or str(e)
        raise DigitnetError(f"cannot listen on {host}:{port} ({why}); choose another --port or "
                            f"--host") from None


def check_threads(threads: int) -> None:
    """Raises DigitnetError unless `threads` is 1 to MAX_THREADS."""
    if type(threads) is not int or not 1 <= threads <= MAX_THREADS:
        raise DigitnetError(f"--threads must be 1 to {MAX_THREADS}, got {threads}")


def keep_freed_memory() -> bool:
    """Set glibc's malloc thresholds for this process (see MMAP_THRESHOLD); False where the C
    library is not glibc (macOS, Windows, musl), which is left as it is."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None)
    # gnu_get_libc_version is glibc's alone; musl has a mallopt that does nothing
    if not (hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt")):
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def serve(app: "FastAPI", sock: socket.socket, log_level: str = "info",
          threads: int = DEFAULT_THREADS) -> None:
    """Serve `app` on a bound socket with uvicorn until interrupted (Ctrl+C, SIGTERM), with
    `threads` torch threads (see DEFAULT_THREADS) and glibc's malloc thresholds set for a
    server (`keep_freed_memory`) in this process."""
    check_serve_dependencies()
    check_threads(threads)
    import torch
    import uvicorn

    torch.set_num_threads(threads)
    keep_freed_memory()

    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5,
                            limit_concurrency=MAX_CONNECTIONS)
    uvicorn.Server(config).run(sockets=[sock])


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"
