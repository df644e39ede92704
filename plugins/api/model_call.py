"""``/predictions/{wf}__{node}``: one node of a workflow called as a TorchServe model."""

from __future__ import annotations

import falcon

from plugins.api.decoding import read_body
from plugins.api.inference import Predicting
from plugins.api.management import find_node


class NodePrediction(Predicting):
    """``/predictions/{wf}__{node}``: run one node of a workflow, query parameters included."""

    __slots__ = ()

    def on_post(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        entry, node = find_node(self.kernel, name)
        body = read_body(req, self.kernel.settings.max_request_size)
        row = self._row(req, body)
        row.update({k: v.encode() for k, v in req.params.items() if isinstance(v, str)})
        request = self._request(req, row)
        output = self._wait(entry.executor.submit_node(node.name, request), request)
        self._send(resp, self.kernel.hooks.serializer("", output).serialize(output))

    on_put = on_post
