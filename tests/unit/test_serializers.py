"""The default serializers follow TorchServe's conversions."""

import json

import pytest
import torch

from plugins.serializers import wfserve_serializer


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (b"raw", b"raw"),
        (bytearray(b"raw"), b"raw"),
        ("héllo", "héllo".encode()),
        ({"a": [1, 2]}, json.dumps({"a": [1, 2]}, indent=2).encode()),
        (3, b"3"),
        ([1, "x"], json.dumps([1, "x"], indent=2).encode()),
    ],
)
def test_encoding_matches_torchserve(obj, expected):
    assert wfserve_serializer("", obj).serialize(obj) == expected


def test_tensors_round_trip_through_torch_save():
    t = torch.arange(6.0).reshape(2, 3)
    serializer = wfserve_serializer("", t)
    data = serializer.serialize(t)
    assert torch.equal(serializer.deserialize(data), t)


@pytest.mark.parametrize(
    ("content_type", "data", "expected"),
    [
        ("application/json", b'{"x": 1}', {"x": 1}),
        ("application/vnd.api+json", b"[1]", [1]),
        ("text/plain", b"hi", "hi"),
        ("image/png", b"\x89PNG", b"\x89PNG"),
        ("", b"x", b"x"),
    ],
)
def test_decoding_by_content_type(content_type, data, expected):
    assert wfserve_serializer(content_type, data).deserialize(data) == expected
