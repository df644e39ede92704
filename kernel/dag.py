"""The workflow DAG: nodes, edges, TorchServe's validation outcomes, topological order.

The messages are TorchServe 0.12.0's (``ens/Dag.java``) so a client sees the same 400 bodies:
``Self loop exception``, ``loop exception`` (an edge given twice), ``DAG should have only one
start node``, ``Not a valid DAG`` (a cycle reachable from the root).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from collections.abc import Mapping

from wfserve.kernel.errors import InvalidDAG


class Dag:
    """A directed graph of named nodes; :meth:`validate` makes it a rooted DAG.

    Insertion order is kept everywhere (nodes, children, parents), so order-dependent outputs
    (the topological order, the parents of a multi-parent node) are deterministic.
    """

    __slots__ = ("_children", "_order", "_parents")

    def __init__(self) -> None:
        self._children: dict[str, list[str]] = {}
        self._parents: dict[str, list[str]] = {}
        self._order: list[str] | None = None

    @classmethod
    def from_edges(
        cls, edges: Mapping[str, Iterable[str]], known: Iterable[str] | None = None
    ) -> Dag:
        """Build and validate a DAG from ``{node: [child, ...]}``.

        :param edges: adjacency in the order written; nodes that only appear as children are
            added on the fly, as TorchServe does.
        :param known: when given, every node must be one of these, else ``InvalidDAG``.
        :raises InvalidDAG: on a self loop, a repeated edge, an unknown node, more or fewer than
            one root, or a cycle.
        """
        allowed = None if known is None else set(known)
        dag = cls()
        for src, children in edges.items():
            dag._check_known(src, allowed)
            dag.add_node(src)
            for dst in children:
                dag._check_known(dst, allowed)
                dag.add_edge(src, dst)
        dag.validate()
        return dag

    @staticmethod
    def _check_known(name: str, allowed: set[str] | None) -> None:
        if allowed is not None and name not in allowed:
            raise InvalidDAG(f"Unknown node: {name}", node=name)

    def add_node(self, name: str) -> None:
        """Add a node if it is not there yet."""
        if name not in self._children:
            self._children[name] = []
            self._parents[name] = []
            self._order = None

    def add_edge(self, src: str, dst: str) -> None:
        """Add the edge ``src -> dst``, adding either node if needed.

        :raises InvalidDAG: ``Self loop exception`` when ``src == dst``, ``loop exception`` when
            the edge is already there.
        """
        if src == dst:
            raise InvalidDAG("Self loop exception", node=src)
        self.add_node(src)
        self.add_node(dst)
        if dst in self._children[src]:
            raise InvalidDAG("loop exception", node=src, child=dst)
        self._children[src].append(dst)
        self._parents[dst].append(src)
        self._order = None

    def validate(self) -> list[str]:
        """Check the graph has exactly one root and no cycle; return the topological order.

        The order is Kahn's algorithm with a FIFO queue, so ``a->[b,c,d], b->e, e->f, c->f,
        d->f`` gives ``[a, b, c, d, e, f]`` as TorchServe's ``EnsembleTest.testDAG`` expects.
        """
        roots = [n for n, parents in self._parents.items() if not parents]
        if len(roots) != 1:
            raise InvalidDAG("DAG should have only one start node", roots=roots)
        remaining = {n: len(p) for n, p in self._parents.items()}
        ready = deque(roots)
        order: list[str] = []
        while ready:
            node = ready.popleft()
            order.append(node)
            for child in self._children[node]:
                remaining[child] -= 1
                if remaining[child] == 0:
                    ready.append(child)
        if len(order) != len(self._children):
            raise InvalidDAG("Not a valid DAG", unreached=sorted(set(self._children) - set(order)))
        self._order = order
        return list(order)

    @property
    def nodes(self) -> list[str]:
        """Every node, in insertion order."""
        return list(self._children)

    @property
    def order(self) -> list[str]:
        """The topological order (validates first if needed)."""
        if self._order is None:
            self.validate()
        assert self._order is not None
        return list(self._order)

    @property
    def root(self) -> str:
        """The single start node."""
        return self.order[0]

    @property
    def leaves(self) -> list[str]:
        """Nodes without children, in topological order; their outputs form the response."""
        return [n for n in self.order if not self._children[n]]

    def children(self, node: str) -> list[str]:
        """The nodes fed by ``node``."""
        return list(self._children[node])

    def parents(self, node: str) -> list[str]:
        """The nodes feeding ``node``, in the order their edges were added."""
        return list(self._parents[node])

    def __contains__(self, node: object) -> bool:
        return node in self._children

    def __len__(self) -> int:
        return len(self._children)


def java_map_string(edges: Mapping[str, Iterable[str]]) -> str:
    """Render ``{node: [children]}`` as Java's ``Map.toString()`` does (TorchServe's Describe).

    >>> java_map_string({"pre": ["m1", "m2"], "m1": ["post"]})
    '{pre=[m1, m2], m1=[post]}'
    """
    parts = (f"{k}=[{', '.join(v)}]" for k, v in edges.items())
    return "{" + ", ".join(parts) + "}"
