"""TorchServe's own handlers (the ``torchserve==0.12.0`` package), run by wfserve over HTTP.

Archives built with the official archivers (:func:`tests.archives.build_ts_stores`):

- ``tiny_eager.mar`` / ``tiny_scripted.mar``: a ``ts.torch_handler.base_handler.BaseHandler``
  subclass (``tests/assets/ts/tiny_handler.py``) over the same TinyNet, once in eager mode
  (``--model-file`` + state dict, with a model-config.yaml) and once as TorchScript.
- ``resnet_scripted.mar`` / ``resnet_eager.mar``: TorchServe's built-in ``image_classifier``
  over torchvision's ResNet-18 (random weights, 10 classes, ``index_to_name.json``), as
  TorchScript and with ``--model-file``.

What TorchServe 0.12.0 does, from its sources (``ManagementRequestHandler``,
``DescribeModelResponse``, ``InferenceRequestHandler``, ``base_handler.py``):
``GET /models/{m}?customized=true`` sends the handler a request with the header
``describe: True``; ``BaseHandler.handle`` answers ``[describe_handle()]``, and the frontend
puts that dict, parsed, into the describe as ``customizedMetadata`` (``{}`` when the answer
is not a JSON object, ``null`` included). ``/explanations/{m}`` sets ``explain: True`` and
``/predictions/{m}`` sets ``explain: False`` whatever the client sent; ``BaseHandler`` then
calls ``explain_handle``, which takes ``target`` from the first row (a form field, as bytes;
query parameters are not input rows there).

torchserve is installed by the ``test`` extra: without it these tests fail, they never skip.
"""

import importlib
import io
import json
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from tests.archives import INDEX_TO_NAME
from tests.archives import SAMPLE
from tests.archives import build_ts_stores
from tests.archives import resnet18
from tests.archives import run_model
from tests.archives import tiny_models
from tests.helpers import WfserveServer

pytestmark = pytest.mark.integration
JSON = {"Content-Type": "application/json"}
PNG = {"Content-Type": "image/png"}
TINY_IG_STEPS = 16  # tests/assets/ts/tiny_handler.py IG_STEPS
VISION_IG_STEPS = 15  # ts.torch_handler.vision_handler.VisionHandler.get_insights


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    stores = build_ts_stores(tmp_path_factory.mktemp("ts_stores"))
    root = tmp_path_factory.mktemp("ts_server")
    with WfserveServer(root, "--model-store", str(stores.model_store),
                       "--workflow-store", str(stores.workflow_store)) as srv:
        for name in ("tiny_wf", "vision_wf"):
            r = httpx.post(f"{srv.management}/workflows", params={"url": f"{name}.war"},
                           timeout=300)
            assert r.status_code == 200, f"{name}: {r.text}\n{srv.log()[-4000:]}"
        yield srv


@pytest.fixture(scope="module")
def image() -> bytes:
    """A 96x64 RGB PNG with a colour gradient and a square, made with Pillow."""
    from PIL import Image
    from PIL import ImageDraw

    img = Image.new("RGB", (96, 64))
    img.putdata([(x * 255 // 95, y * 255 // 63, (x + y) % 256) for y in range(64)
                 for x in range(96)])
    ImageDraw.Draw(img).rectangle((30, 16, 60, 44), fill=(250, 240, 10))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


# --- what the handlers should answer, computed here ---------------------------------------


def tiny_output(x: list[float] = SAMPLE) -> list[float]:
    return [round(v, 6) for v in run_model("tiny", [x])[0]]


def integrated_gradients(model, inputs, target: int, n_steps: int):
    from captum.attr import IntegratedGradients

    return IntegratedGradients(model).attribute(inputs, target=target, n_steps=n_steps)


def tiny_attributions(target: int, x: list[float] = SAMPLE) -> list[float]:
    import torch

    inputs = torch.tensor([x], dtype=torch.float32)
    return integrated_gradients(tiny_models()["tiny"], inputs, target, TINY_IG_STEPS)[0].tolist()


def image_tensor(png: bytes):
    """``image_classifier``'s preprocessing of one image, as a batch of one."""
    from PIL import Image
    from ts.torch_handler.image_classifier import ImageClassifier

    return ImageClassifier.image_processing(Image.open(io.BytesIO(png))).unsqueeze(0)


def top5(png: bytes) -> dict[str, float]:
    """``image_classifier``'s answer: the 5 likeliest labels and their probabilities."""
    import torch

    labels = json.loads(INDEX_TO_NAME.read_text())
    with torch.inference_mode():
        probs = torch.softmax(resnet18()(image_tensor(png)), dim=1)[0]
    values, classes = torch.topk(probs, 5)
    return {labels[str(c)]: p for c, p in zip(classes.tolist(), values.tolist(), strict=True)}


def assert_top5(answer: dict[str, float], png: bytes) -> None:
    want = top5(png)
    assert list(answer) == list(want)  # the labels, likeliest first
    assert answer == pytest.approx(want, rel=1e-4, abs=1e-6)


# --- the loader uses TorchServe's own built-ins -------------------------------------------


def test_torchserve_is_installed_and_the_loader_uses_its_builtins():
    """With ``ts`` installed, a built-in handler name resolves to TorchServe's module, and
    ``base_handler`` to TorchServe's, not wfserve's stand-in."""
    from wfserve.plugins.handlers.entry import _builtin

    assert metadata.version("torchserve") == "0.12.0"
    archive = SimpleNamespace(source=Path("x.mar"))
    for name in ("image_classifier", "base_handler"):
        module = _builtin(name, archive)
        assert module is importlib.import_module(f"ts.torch_handler.{name}"), name


# --- a BaseHandler subclass: eager (--model-file) and TorchScript ---------------------------


def test_base_handler_subclass_eager_and_torchscript_in_a_workflow(inf):
    r = inf.post("/wfpredict/tiny_wf", headers=JSON, content=json.dumps({"input": SAMPLE}))
    assert r.status_code == 200, r.text
    assert r.json() == {"eager": tiny_output(), "scripted": tiny_output()}


@pytest.mark.parametrize("node", ["eager", "scripted"])
def test_base_handler_subclass_as_a_model(inf, node):
    x = [0.5, -1.0, 2.0, 0.25]
    r = inf.post(f"/predictions/tiny_wf__{node}", headers=JSON, content=json.dumps(x))
    assert (r.status_code, r.json()) == (200, {"output": tiny_output(x)}), r.text


@pytest.mark.parametrize(("node", "mode", "profile"),
                         [("eager", "eager", True), ("scripted", "torchscript", False)])
def test_describe_customized_calls_describe_handle(mgmt, node, mode, profile):
    """``?customized=true`` adds the handler's ``describe_handle()`` dict as
    ``customizedMetadata``; a plain describe does not call the handler."""
    plain = mgmt.get(f"/models/tiny_wf__{node}")
    assert plain.status_code == 200, plain.text
    assert "customizedMetadata" not in plain.json()[0]
    r = mgmt.get(f"/models/tiny_wf__{node}", params={"customized": "true"})
    assert r.status_code == 200, r.text
    (described,) = r.json()
    assert described["modelName"] == f"tiny_wf__{node}"
    assert described["customizedMetadata"] == {
        "handler": "TinyHandler", "modelName": f"tiny_{node}", "mode": mode, "profile": profile}


@pytest.mark.parametrize("node", ["eager", "scripted"])
def test_explanations_call_explain_handle(inf, node):
    """``/explanations`` answers ``explain_handle``: integrated gradients of target 0, or of
    the ``target`` form field."""
    body = json.dumps({"input": SAMPLE})
    r = inf.post(f"/explanations/tiny_wf__{node}", headers=JSON, content=body)
    assert r.status_code == 200, r.text
    assert r.json() == pytest.approx(tiny_attributions(0), rel=1e-5, abs=1e-7)
    r = inf.post(f"/explanations/tiny_wf__{node}", data={"target": "2"},
                 files={"data": ("input.json", body, "application/json")})
    assert r.status_code == 200, r.text
    attributions = r.json()
    assert attributions == pytest.approx(tiny_attributions(2), rel=1e-5, abs=1e-7)
    # integrated gradients add up to F(x) - F(baseline 0) for the target
    completeness = run_model("tiny", [SAMPLE])[0][2] - run_model("tiny", [[0.0] * 4])[0][2]
    assert sum(attributions) == pytest.approx(completeness, abs=1e-3)


def test_an_explain_header_does_not_make_a_prediction_an_explanation(inf):
    """TorchServe sets ``explain: False`` on every ``/predictions`` request, so a client's
    own ``explain: True`` header does not turn it into an explanation."""
    r = inf.post("/predictions/tiny_wf__scripted", headers={**JSON, "explain": "True"},
                 content=json.dumps(SAMPLE))
    assert (r.status_code, r.json()) == (200, {"output": tiny_output()}), r.text


# --- the built-in image_classifier over torchvision's ResNet-18 -----------------------------


def test_image_classifier_in_a_workflow(inf, image):
    """pre -> [resnet_scripted (TorchScript), resnet_eager (--model-file)] -> classes."""
    r = inf.post("/wfpredict/vision_wf", headers=PNG, content=image)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert set(answer) == {"scripted", "eager"}
    assert_top5(answer["scripted"], image)
    assert_top5(answer["eager"], image)


@pytest.mark.parametrize("node", ["resnet_scripted", "resnet_eager"])
def test_image_classifier_as_a_model(inf, image, node):
    """The image as the raw body and as the form field ``data`` (``curl -F data=@img``)."""
    r = inf.post(f"/predictions/vision_wf__{node}", headers=PNG, content=image)
    assert r.status_code == 200, r.text
    assert_top5(r.json(), image)
    r = inf.post(f"/predictions/vision_wf__{node}",
                 files={"data": ("image.png", image, "image/png")})
    assert r.status_code == 200, r.text
    assert_top5(r.json(), image)


def test_image_classifier_explanations(inf, image):
    """``VisionHandler.get_insights``: integrated gradients (15 steps) of target 0 over the
    preprocessed 3x224x224 image."""
    import numpy as np

    r = inf.post("/explanations/vision_wf__resnet_scripted", headers=PNG, content=image)
    assert r.status_code == 200, r.text
    got = np.asarray(r.json(), dtype=np.float64)
    assert got.shape == (3, 224, 224)
    want = integrated_gradients(resnet18(), image_tensor(image), 0, VISION_IG_STEPS)[0]
    np.testing.assert_allclose(got, want.double().numpy(), rtol=1e-3, atol=1e-6)


def test_image_classifier_describe_customized_empty(mgmt):
    """``BaseHandler.describe_handle`` returns None: the worker answers ``null``, which
    TorchServe's frontend cannot read as a JSON object (``Customized metadata should be a
    dictionary.``), so ``customizedMetadata`` is ``{}``."""
    r = mgmt.get("/models/vision_wf__resnet_eager", params={"customized": "true"})
    assert r.status_code == 200, r.text
    (described,) = r.json()
    assert described["modelName"] == "vision_wf__resnet_eager"
    assert described["modelUrl"] == "resnet_eager.mar"
    assert described["customizedMetadata"] == {}
