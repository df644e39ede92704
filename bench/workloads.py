"""The benchmark's archives, built with the official archivers like the peer's (setup.sh).

- ``seq_wf`` (pre->m1->m2->post) and ``par_wf`` (pre->[m1,m2]->aggregate): the peer's two
  workflows, same tiny seeded models and handlers (``tests/archives.py``);
- ``batch1_wf`` / ``batch8_wf``: one model node whose cost dominates (a deep narrow TorchScript
  MLP, one call per batch) at batch-size 1 and 8;
- ``hop1_wf`` .. ``hop8_wf``: chains of 1, 2, 4, 8 trivial function nodes;
- ``one_wf``: the plain one-model workflow, ``m1`` alone (the peer's tiny model and settings);
- ``image_wf``: what a TorchServe user runs, ``decode_resize -> resnet18 -> top5``: a JPEG
  decoded and resized to 224x224 and normalised (PIL, numpy), torchvision's ResNet-18 with
  random weights saved as TorchScript and packed with torch-model-archiver (batch size 8,
  max-batch-delay 5 ms, one intra-op torch thread: ``assets/image_classifier.py``), and the
  top 5 classes (``assets/image_workflow.py``); :func:`sample_jpeg` is the request body.
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


IMAGE_SPEC = """\
models:
  min-workers: 1
  max-workers: 1
  batch-size: 1
  max-batch-delay: 0
  retry-attempts: 1
  timeout-ms: 30000
  resnet18:
    url: resnet18.mar
    batch-size: 8
    max-batch-delay: 5
dag:
  decode_resize: [resnet18]
  resnet18: [top5]
"""
# every workflow the benchmark serves (wfserve registers them all at start)
ONE_SPEC = """\
models:
  min-workers: 1
  max-workers: 1
  batch-size: 1
  max-batch-delay: 0
  retry-attempts: 1
  timeout-ms: 10000
  m1:
    url: m1.mar
dag:
  m1: []
"""
WORKFLOWS = ("seq_wf", "par_wf", "one_wf", *(f"batch{b}_wf" for b in BATCHES),
             *(f"hop{h}_wf" for h in HOPS), "image_wf")


@dataclass(frozen=True)
class Workloads:
    model_store: Path
    workflow_store: Path
    jpeg: bytes = b""


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


def save_resnet18(path: Path) -> Path:
    """torchvision's ResNet-18 with random (seeded) weights, traced to TorchScript."""
    import torch
    import torchvision

    torch.manual_seed(5)
    model = torchvision.models.resnet18(weights=None).eval()
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        torch.jit.trace(model, torch.zeros(1, 3, 224, 224)).save(str(path))
    return path


def sample_jpeg(width: int = 640, height: int = 480) -> bytes:
    """A deterministic photo-sized JPEG (gradients, shapes and a little noise; quality 90)."""
    import io
    import random

    from PIL import Image
    from PIL import ImageDraw

    image = Image.radial_gradient("L").resize((width, height))
    image = Image.merge("RGB", (image, Image.linear_gradient("L").resize((width, height)),
                                image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
    draw = ImageDraw.Draw(image)
    rng = random.Random(7)
    for _ in range(40):
        x, y = rng.randrange(width), rng.randrange(height)
        r = rng.randrange(10, 80)
        draw.ellipse((x - r, y - r, x + r, y + r),
                     fill=(rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    noise = Image.effect_noise((width, height), 24).convert("RGB")
    image = Image.blend(image, noise, 0.15)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


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
    build_war(stores.workflow_store, "one_wf", spec_file=_spec(build / "one.yaml", ONE_SPEC))
    for hops in HOPS:
        edges = "".join(f"  f{i}: [f{i + 1}]\n" for i in range(hops - 1))
        edges += f"  f{hops - 1}: []\n" if hops == 1 else ""
        spec = _spec(build / f"hop{hops}.yaml", f"models:\n  timeout-ms: 10000\ndag:\n{edges}")
        build_war(stores.workflow_store, f"hop{hops}_wf", spec_file=spec,
                  handler=ASSETS / "hop_handler.py")
    build_mar(stores.model_store, "resnet18", handler=ASSETS / "image_classifier.py",
              serialized_file=save_resnet18(build / "resnet18.pt"))
    build_war(stores.workflow_store, "image_wf", spec_file=_spec(build / "image.yaml", IMAGE_SPEC),
              handler=ASSETS / "image_workflow.py")
    return Workloads(stores.model_store, stores.workflow_store, sample_jpeg())
