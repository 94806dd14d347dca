"""The environment a run was trained in (library versions, device, git commit), for config.json."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from digitnet.version import __version__


def environment_info(device: torch.device) -> dict:
    info = dict(digitnet=__version__, torch=torch.__version__, numpy=np.__version__,
                python=sys.version.split()[0], platform=platform.platform(),
                threads=torch.get_num_threads(), device=str(device))
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    src = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=5, check=False)
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=False)
        if commit.returncode == 0:
            info["git_commit"] = commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return info
