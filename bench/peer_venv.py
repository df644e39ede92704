"""``python -m bench.peer_venv``: build the TorchServe 0.12.0 peer's venv the benchmark starts.

The recipe of ``shared/peer/setup.sh`` with torch 2.14.1 and torchvision 0.29.1 (local wheels,
the pair wfserve uses; torchvision's wheel cannot load with the torch 2.13.0 CPU wheel, and the
image pipeline's handlers need torchvision's ResNet-18 TorchScript to load there), plus Pillow
and numpy for its function nodes. ``VENV`` (default /tmp/peer-venv) is the place; an existing
venv with ``bin/torchserve`` is kept. The JVM needs Java 11+ on ``PATH`` (17 used).

    python -m bench.peer_venv          # then: python -m bench --peer torchserve
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.servers import PEER_VENV

PACKAGES = (["torch==2.14.1", "torchvision==0.29.1"],
            ["torchserve==0.12.0", "torch-model-archiver==0.12.0",
             "torch-workflow-archiver==0.2.15", "pyyaml", "numpy", "pillow"])


def main() -> int:
    pip = PEER_VENV / "bin" / "pip"
    if (PEER_VENV / "bin" / "torchserve").exists():
        sys.stderr.write(f"{PEER_VENV} exists; kept\n")
    else:
        base = Path(sys.base_prefix) / "bin" / "python3"  # this Python, outside any venv
        subprocess.run([str(base), "-m", "venv", str(PEER_VENV)], check=True)
        for group in PACKAGES:  # NOTE: torch first, so nothing below resolves another build
            subprocess.run([str(pip), "install", *group], check=True)
    return subprocess.run(
        [str(PEER_VENV / "bin" / "python"), "-c",
         "import torch, torchvision, ts, PIL, numpy, yaml; "
         "print('peer venv:', torch.__version__, torchvision.__version__)"]).returncode


if __name__ == "__main__":
    raise SystemExit(main())
