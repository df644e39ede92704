"""The benchmark's archives, built with the official archivers like the peer's (setup.sh).

- ``seq_wf`` (pre->m1->m2->post) and ``par_wf`` (pre->[m1,m2]->aggregate): the peer's two
  workflows, same tiny seeded models and handlers (``tests/archives.py``);
- ``batch1_wf`` / ``batch8_wf``: one model node whose cost dominates (a deep narrow TorchScript
  MLP, one call per batch) at batch-size 1 and 8;
- ``hop1_wf`` .. ``hop8_wf``: chains of 1, 2, 4, 8 trivial function nodes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from tests.archives import build_mar
from tests.archives import build_peer_stores
from tests.archives import build_war

ASSETS = Path(__file__).resolve().parent / "assets"
HOPS = (1, 2, 4, 8)
BATCHES = (1, 8)
HEAVY_WIDTH, HEAVY_DEPTH = 512, 96  # ~10 ms per call at batch 1, ~15 ms at batch 8 (one core)


@dataclass(frozen=True)
class Workloads:
    model_store: Path
    workflow_store: Path


def save_heavy_model(path: Path) -> Path:
    """A deep MLP whose per-call cost dominates a request and grows slowly with batch size."""
    import torch

    torch.manual_seed(3)
    layers: list[torch.nn.Module] = [torch.nn.Linear(4, HEAVY_WIDTH)]
    for _ in range(HEAVY_DEPTH):
        layers += [torch.nn.Linear(HEAVY_WIDTH, HEAVY_WIDTH), torch.nn.ReLU()]
    layers.append(torch.nn.Linear(HEAVY_WIDTH, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(torch.nn.Sequential(*layers).eval(), torch.zeros(1, 4)).save(str(path))
    return path


def _spec(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def build_workloads(root: Path) -> Workloads:
    """Build every archive under ``root``; returns the two stores."""
    stores = build_peer_stores(root)
    build = root / "build"
    build_mar(stores.model_store, "heavy", handler=ASSETS / "heavy_handler.py",
              serialized_file=save_heavy_model(build / "heavy.pt"))
    for size in BATCHES:
        spec = _spec(build / f"batch{size}.yaml",
                     f"models:\n  batch-size: {size}\n  max-batch-delay: 5\n"
                     "  heavy:\n    url: heavy.mar\ndag:\n  heavy: []\n")
        build_war(stores.workflow_store, f"batch{size}_wf", spec_file=spec,
                  handler=ASSETS / "hop_handler.py")
    for hops in HOPS:
        edges = "".join(f"  f{i}: [f{i + 1}]\n" for i in range(hops - 1))
        edges += f"  f{hops - 1}: []\n" if hops == 1 else ""
        spec = _spec(build / f"hop{hops}.yaml", f"models:\n  timeout-ms: 10000\ndag:\n{edges}")
        build_war(stores.workflow_store, f"hop{hops}_wf", spec_file=spec,
                  handler=ASSETS / "hop_handler.py")
    return Workloads(stores.model_store, stores.workflow_store)
