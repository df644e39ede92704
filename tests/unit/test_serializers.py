"""The default serializers follow TorchServe's conversions."""

import json

import pytest
import torch

from wfserve.plugins.serializers import wfserve_serializer


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
        ("application/vnd.api+json", b"[1]", bytearray(b"[1]")),
        ("application/x-torch", b"PK", bytearray(b"PK")),
        ("text/plain", b"hi", "hi"),
        ("text/csv", b"", ""),
        ("image/png", b"\x89PNG", bytearray(b"\x89PNG")),
        ("", b"x", bytearray(b"x")),
    ],
)
def test_decoding_by_content_type(content_type, data, expected):
    """Only application/json is parsed and text becomes str; the rest is a bytearray."""
    decoded = wfserve_serializer(content_type, data).deserialize(data)
    assert (type(decoded), decoded) == (type(expected), expected)


@pytest.mark.parametrize(("content_type", "data"), [
    ("application/json", b"{bad"),
    ("application/json", b""),
    ("application/json", b"\xef\xbb\xbf{}"),  # a BOM: TorchServe decodes UTF-8 first
    ("application/json", '{"a": 1}'.encode("utf-16")),
    ("text/plain", b"\xff"),
])
def test_decoders_raise_on_what_does_not_decode(content_type, data):
    """The caller then passes the raw bytearray on, as TorchServe does."""
    with pytest.raises(ValueError):
        wfserve_serializer(content_type, data).deserialize(data)
