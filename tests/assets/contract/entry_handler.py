"""Entry points that fail at load or are looked up as TorchServe's model loader does
(tests/conformance/test_handler_contract.py).

``start`` passes its input on; ``crash`` and ``oom`` raise when called with ``(None, context)``
at load; ``inert`` is an attribute named like a node that is not callable; there is no
``fallback`` attribute, so a node of that name takes the module's only class.
"""

inert = 42


def start(data, context):
    if data is None:
        return None
    return [row.get("body") for row in data]


def crash(data, context):
    if data is None:
        raise RuntimeError("crash at load")
    return [b"never"] * len(data)


def oom(data, context):
    if data is None:
        raise MemoryError("no memory at load")
    return [b"never"] * len(data)


class Fallback:
    def initialize(self, context):
        self.prefix = b"fallback:"

    def handle(self, data, context):
        return [self.prefix + bytes(row["body"]) for row in data]
