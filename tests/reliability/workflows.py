"""The reliability suite's workflows and the checked requests sent to them.

- ``seq_wf``, ``par_wf``: the peer's two workflows (:func:`tests.archives.build_peer_stores`);
- ``diamond_wf``: pre->[m1,m2]->aggregate with batching (batch-size 8, max-batch-delay 5 ms,
  2 workers per node); answers as ``par_wf`` does;
- ``chaos_wf`` (TEST ONLY): pre->chaos->m1->m2->post, where ``chaos`` raises, hangs past
  ``timeout-ms``, returns one output too many or calls ``os.abort()`` when the input's first
  value asks (``tests/assets/chaos/chaos_handler.py``); answers as ``seq_wf`` otherwise.

:func:`plans` gives each client its own inputs, so no two concurrent requests share an input
and an answer delivered to the wrong request is caught as ``wrong``.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.checked import Case
from tests.archives import WORKFLOW_HANDLER
from tests.archives import Stores
from tests.archives import build_peer_stores
from tests.archives import build_war
from tests.archives import expected_par
from tests.archives import expected_seq

CHAOS = Path(__file__).resolve().parents[1] / "assets" / "chaos"
CHAOS_HANDLER = CHAOS / "chaos_handler.py"
RAISE, HANG, WRONG_COUNT, ABORT = 101.0, 102.0, 103.0, 104.0
HANG_S = 3.0  # chaos_handler.HANG_S
CHAOS_TIMEOUT_MS = 1000  # chaos_workflow.yaml timeout-ms (retry-attempts 1: two attempts)
EXPECTED = {"seq_wf": expected_seq, "par_wf": expected_par, "diamond_wf": expected_par,
            "chaos_wf": expected_seq}
SOAK_WORKFLOWS = ("seq_wf", "par_wf", "diamond_wf")


def add_wars(workflow_store: Path) -> None:
    """Build ``diamond_wf.war`` and ``chaos_wf.war`` into ``workflow_store``."""
    build_war(workflow_store, "diamond_wf", spec_file=CHAOS / "diamond_workflow.yaml",
              handler=WORKFLOW_HANDLER)
    build_war(workflow_store, "chaos_wf", spec_file=CHAOS / "chaos_workflow.yaml",
              handler=CHAOS_HANDLER)


def build_stores(root: Path) -> Stores:
    """The peer's stores plus ``diamond_wf.war`` and ``chaos_wf.war``, under ``root``."""
    stores = build_peer_stores(root)
    add_wars(stores.workflow_store)
    return stores


def body(x: list[float]) -> bytes:
    return json.dumps({"input": x}).encode()


def case(workflow: str, x: list[float]) -> Case:
    """A checked request: ``x`` to ``workflow`` and the answer it must get."""
    return Case(f"/wfpredict/{workflow}", body(x), EXPECTED[workflow](x))


def fault(kind: float, seed: int = 0) -> list[float]:
    """An input that makes ``chaos_wf``'s chaos node misbehave (``RAISE``, ``HANG``...)."""
    return [kind, 0.25, 0.5, round(0.01 * seed, 6)]


def inputs(client: int, count: int) -> list[list[float]]:
    """``count`` inputs that belong to ``client`` alone (all distinct across clients)."""
    return [[round(0.001 * client, 6), round(0.01 * k, 6), round(-0.5 + 0.003 * client, 6),
             round(1.0 + 0.1 * k, 6)] for k in range(count)]


def plans(workflows: tuple[str, ...] | list[str], clients: int,
          per_client: int = 8, offset: int = 0) -> list[list[Case]]:
    """One plan per client, cycling through ``workflows``; client ``i`` uses its own inputs
    (``offset`` separates the inputs of several groups of clients)."""
    return [[case(workflows[i % len(workflows)], x) for x in inputs(offset + i, per_client)]
            for i in range(clients)]
