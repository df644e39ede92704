"""The workflow spec YAML (``models:``, ``dag:`` and wfserve's ``edges:``) as a typed
:class:`WorkflowSpec`.

TorchServe's meaning is kept: six properties with its defaults, set globally under ``models:``
or per model, a per-model value winning over the global one; every other key under ``models:``
is a model node (``url`` required); a ``dag:`` node that is not a model is a function node,
run with one worker, batch 1 and no delay (TorchServe §3.9) but the global retry and timeout.

Where TorchServe fails with a Java ``ClassCastException`` or ignores a typo, we raise a
:class:`~wfserve.kernel.errors.SpecError` that names the key and its line. Unlike TorchServe, a
global property applies to every model whatever its position in the file.

``edges:`` is a wfserve extension: per-edge options, keyed ``parent -> child`` (an edge of
``dag:``). ``when`` is a condition over the parent's output
(:mod:`wfserve.kernel.conditions`), compiled here; ``map: true`` makes the edge a map edge: the
child runs once per item of the parent's list output and its outputs are gathered, in item
order, into one list for its own children. A map edge's child must have that one parent and
the edge no ``when`` (to keep joins simple). A spec without ``edges:`` means what it means to
TorchServe.

wfserve extension at the top level: ``deadline-ms`` (a positive integer), the workflow's default
request deadline, used when a request brings none of its own (``X-Request-Timeout-Ms``).
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from typing import Any
from typing import Literal

import yaml

from wfserve.kernel.conditions import Condition
from wfserve.kernel.dag import Dag
from wfserve.kernel.dag import java_map_string
from wfserve.kernel.errors import SpecError
from wfserve.kernel.names import NAME_RULE
from wfserve.kernel.names import is_valid_name

#: property name -> (TorchServe default, smallest allowed value)
PROPERTIES: dict[str, tuple[int, int]] = {
    "min-workers": (1, 1),
    "max-workers": (1, 1),
    "batch-size": (1, 1),
    "max-batch-delay": (50, 0),
    "retry-attempts": (1, 0),
    "timeout-ms": (10000, 1),
}
#: wfserve extensions TorchServe does not know: global flags. Per-model sections belong to
#: plugins (``wfserve_spec_sections``), passed to :func:`parse_spec` as ``sections``.
GLOBAL_EXTENSIONS: dict[str, type] = {"typed": bool}
#: wfserve extension at the top level: the workflow's default deadline, in milliseconds
DEADLINE_KEY = "deadline-ms"
#: the top-level keys of a spec: TorchServe's two, then wfserve's extensions; any other is a
#: SpecError (TorchServe ignores it), so a spec written for a server with more extensions is
#: refused by name instead of running without them
TOP_LEVEL_KEYS = ("models", "dag", "edges", DEADLINE_KEY)
#: a per-model section's check: the section as the node keeps it, or ValueError (the message)
SectionCheck = Callable[[Any], Any]

NodeKind = Literal["model", "function"]
#: the options an ``edges:`` entry may set
EDGE_OPTIONS = ("when", "map")
#: an edge, ``(parent, child)``
Edge = tuple[str, str]


@dataclass(frozen=True)
class NodeConfig:
    """The six TorchServe properties of one node (delays and timeouts in milliseconds)."""

    min_workers: int = 1
    max_workers: int = 1
    batch_size: int = 1
    max_batch_delay: int = 50
    retry_attempts: int = 1
    timeout_ms: int = 10000

    @classmethod
    def from_properties(cls, props: Mapping[str, int]) -> NodeConfig:
        """Build from spec keys (``min-workers``...); missing keys take TorchServe's defaults."""
        values = {k: props.get(k, default) for k, (default, _) in PROPERTIES.items()}
        return cls(**{k.replace("-", "_"): v for k, v in values.items()})

    def as_properties(self) -> dict[str, int]:
        """The spec-key view (``{"min-workers": 1, ...}``)."""
        return {k: getattr(self, k.replace("-", "_")) for k in PROPERTIES}


@dataclass(frozen=True)
class NodeSpec:
    """One DAG node: a model (``url`` names its ``.mar``) or a function of the war's handler."""

    name: str
    kind: NodeKind
    config: NodeConfig
    url: str | None = None
    extensions: Mapping[str, Any] = field(default_factory=dict)
    line: int | None = None


@dataclass(frozen=True)
class WorkflowSpec:
    """A parsed spec: global properties, every DAG node, the edges as written.

    ``conditions`` holds the ``when`` of each conditional edge (``edges:``), in the order
    written; an edge not in it always holds. ``maps`` holds the map edges (``map: true``).
    Both are empty for a TorchServe spec.
    """

    globals: NodeConfig
    nodes: Mapping[str, NodeSpec]
    edges: Mapping[str, tuple[str, ...]]
    typed: bool = False
    unused_models: tuple[str, ...] = ()
    conditions: Mapping[Edge, Condition] = field(default_factory=dict)
    #: ``deadline-ms``: the default deadline of a request to this workflow (None: the server's)
    deadline_ms: int | None = None
    #: the map edges (``map: true``); each child has that one parent and no condition on it
    maps: frozenset[Edge] = frozenset()

    def dag(self) -> Dag:
        """The validated DAG; raises ``InvalidDAG`` with TorchServe's message."""
        return Dag.from_edges(self.edges, known=self.nodes)

    @property
    def dag_string(self) -> str:
        """The ``workflowDag`` text of TorchServe's Describe answer."""
        return java_map_string(self.edges)

    @property
    def models(self) -> list[NodeSpec]:
        """The model nodes, in DAG order of appearance."""
        return [n for n in self.nodes.values() if n.kind == "model"]


# --- YAML with line numbers -----------------------------------------------------------------


class _LineMap(dict):
    """A mapping that remembers the line of itself and of each key (1-based)."""

    line: int = 0
    key_lines: dict[Any, int]


class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings are :class:`_LineMap` (duplicate keys: last wins, as SnakeYAML)."""


def _construct_line_map(loader: _LineLoader, node: yaml.MappingNode) -> Iterator[_LineMap]:
    data = _LineMap()
    data.line = node.start_mark.line + 1
    data.key_lines = {}
    yield data
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            hash(key)
        except TypeError:
            raise SpecError(f"line {line}: a key must be a plain value", line=line) from None
        data[key] = loader.construct_object(value_node, deep=True)
        data.key_lines[key] = line


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_line_map)


def _load_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_LineLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        where = f" at line {line}" if line else ""
        raise SpecError(
            f"Failed to parse yaml. {source}{where}: {exc.problem or exc}", line=line
        ) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"Failed to parse yaml. {source}: {exc}") from None


# --- parsing --------------------------------------------------------------------------------


def _line(mapping: Any, key: Any) -> int | None:
    return getattr(mapping, "key_lines", {}).get(key) or getattr(mapping, "line", None)


def _fail(message: str, mapping: Any, key: Any) -> SpecError:
    line = _line(mapping, key)
    where = f"line {line}: " if line else ""
    return SpecError(f"{where}{message}", key=str(key), line=line)


def _property(mapping: Any, key: str) -> int:
    value = mapping[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(f"'{key}' must be an integer, got {value!r}", mapping, key)
    smallest = PROPERTIES[key][1]
    if value < smallest:
        raise _fail(f"'{key}' must be at least {smallest}, got {value}", mapping, key)
    return value


def _config(props: dict[str, int], mapping: Any, where: str) -> NodeConfig:
    config = NodeConfig.from_properties(props)
    if config.min_workers > config.max_workers:
        key = "min-workers" if "min-workers" in mapping else "max-workers"
        raise _fail(
            f"{where}: min-workers ({config.min_workers}) exceeds max-workers "
            f"({config.max_workers})",
            mapping,
            key,
        )
    return config


def _node_name(name: Any, mapping: Any, key: Any) -> str:
    if not isinstance(name, str) or not is_valid_name(name):
        raise _fail(
            f"node name {name!r} must be {NAME_RULE}",
            mapping,
            key,
        )
    return name


def _parse_models(models: Any) -> tuple[dict[str, int], dict[str, Any], dict[str, Any]]:
    """Split ``models:`` into global properties, global extensions and model entries."""
    global_props: dict[str, int] = {}
    global_ext: dict[str, Any] = {}
    entries: dict[str, Any] = {}
    for key, value in models.items():
        if key in PROPERTIES:
            global_props[key] = _property(models, key)
        elif key in GLOBAL_EXTENSIONS:
            if not isinstance(value, GLOBAL_EXTENSIONS[key]):
                kind = GLOBAL_EXTENSIONS[key].__name__
                raise _fail(f"'{key}' must be a {kind}, got {value!r}", models, key)
            global_ext[key] = value
        else:
            name = _node_name(key, models, key)
            if not isinstance(value, dict):
                raise _fail(f"model '{name}' must be a mapping with a 'url'", models, key)
            entries[name] = value
    return global_props, global_ext, entries


def _parse_model(name: str, entry: Any, global_props: dict[str, int], line: int | None,
                 sections: Mapping[str, SectionCheck]) -> NodeSpec:
    props = dict(global_props)
    extensions: dict[str, Any] = {}
    url = None
    for key, value in entry.items():
        if key in PROPERTIES:
            props[key] = _property(entry, key)
        elif key == "url":
            if not isinstance(value, str) or not value.strip():
                raise _fail(f"model '{name}': 'url' must be a non-empty string", entry, key)
            url = value.strip()
        elif key in sections:
            try:
                extensions[key] = sections[key](value)
            except ValueError as exc:
                raise _fail(f"model '{name}': {key}: {exc}", entry, key) from None
        else:
            known = ", ".join([*PROPERTIES, "url", *sections])
            raise _fail(f"model '{name}': unknown key '{key}' (known: {known})", entry, key)
    if url is None:
        raise SpecError(f"line {line}: model '{name}' has no 'url'", key=name, line=line)
    config = _config(props, entry, f"model '{name}'")
    return NodeSpec(name, "model", config, url, extensions, line)


def _parse_dag(dag: Any) -> dict[str, tuple[str, ...]]:
    edges: dict[str, tuple[str, ...]] = {}
    for key, children in dag.items():
        name = _node_name(key, dag, key)
        if children is None:
            children = []
        if not isinstance(children, list):
            raise _fail(f"dag node '{name}' must map to a list of nodes", dag, key)
        # NOTE: null and blank children are skipped, as TorchServe's WorkFlow does.
        kept = [c for c in children if c is not None and not (isinstance(c, str) and not c.strip())]
        edges[name] = tuple(_node_name(c, dag, key) for c in kept)
    return edges


def edge_name(edge: Edge) -> str:
    """An edge as ``edges:`` keys it and messages name it: ``parent -> child``."""
    return f"{edge[0]} -> {edge[1]}"


def _parse_edge_key(key: Any, section: Any, dag: Mapping[str, tuple[str, ...]]) -> Edge:
    if not isinstance(key, str) or key.count("->") != 1:
        raise _fail(f"edges: key {key!r} must be 'parent -> child'", section, key)
    parent, child = (part.strip() for part in key.split("->"))
    for name in (parent, child):
        if not is_valid_name(name):
            raise _fail(f"edges: '{key}': node name {name!r} must be {NAME_RULE}", section, key)
    if child not in dag.get(parent, ()):
        raise _fail(f"edges: '{key}' is not an edge of the dag", section, key)
    return parent, child


def _parse_edges(section: Any, dag: Mapping[str, tuple[str, ...]]
                 ) -> tuple[dict[Edge, Condition], frozenset[Edge]]:
    """``edges:`` as the conditions of its conditional edges and its map edges (see the
    module docstring)."""
    if not isinstance(section, dict):
        raise SpecError("'edges' must be a mapping of 'parent -> child' to options",
                        key="edges", line=getattr(section, "line", None))
    conditions: dict[Edge, Condition] = {}
    maps: set[Edge] = set()
    seen: set[Edge] = set()
    known = ", ".join(EDGE_OPTIONS)
    for key, options in section.items():
        edge = _parse_edge_key(key, section, dag)
        if edge in seen:
            raise _fail(f"edges: '{edge_name(edge)}' is given twice", section, key)
        seen.add(edge)
        if options is None:
            continue
        if not isinstance(options, dict):
            raise _fail(f"edges: '{key}' must map to options (known: {known})", section, key)
        for option, value in options.items():
            if option not in EDGE_OPTIONS:
                raise _fail(f"edges: '{key}': unknown option '{option}' (known: {known})",
                            section, key)
            if option == "map":
                if not isinstance(value, bool):
                    raise _fail(f"edges: '{key}': 'map' must be true or false, got {value!r}",
                                section, key)
                if value:
                    maps.add(edge)
                continue
            if not isinstance(value, str) or not value.strip():
                raise _fail(f"edges: '{key}': 'when' must be a non-empty string, got "
                            f"{value!r}", section, key)
            try:
                conditions[edge] = Condition.compile(value)
            except ValueError as exc:
                raise _fail(f"edges: '{key}': bad condition {value!r}: {exc}",
                            section, key) from None
    _check_maps(maps, conditions, section, dag)
    return conditions, frozenset(maps)


def _check_maps(maps: set[Edge], conditions: Mapping[Edge, Condition], section: Any,
                dag: Mapping[str, tuple[str, ...]]) -> None:
    """:raises SpecError: a map edge with a ``when``, or into a child with several parents."""
    for edge in sorted(maps):
        key = next(k for k in section if _parse_edge_key(k, section, dag) == edge)
        if edge in conditions:
            raise _fail(f"edges: '{key}': 'map' and 'when' cannot be combined on one edge "
                        "(a map edge is unconditional, to keep joins simple)", section, key)
        parents = [p for p, children in dag.items() if edge[1] in children]
        if len(parents) > 1:
            raise _fail(f"edges: '{key}': a map edge's child must have one parent, "
                        f"'{edge[1]}' has {len(parents)} ({', '.join(parents)}); mapping into "
                        "a join is not supported, to keep joins simple", section, key)


def _deadline(doc: Any) -> int | None:
    """The top-level ``deadline-ms``, a positive integer, or None when absent."""
    if DEADLINE_KEY not in doc:
        return None
    value = doc[DEADLINE_KEY]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(f"'{DEADLINE_KEY}' must be a positive integer (milliseconds), got {value!r}",
                    doc, DEADLINE_KEY)
    return value


def parse_spec(text: str, source: str = "spec",
               sections: Mapping[str, SectionCheck] | None = None) -> WorkflowSpec:
    """Parse a workflow spec.

    :param text: the YAML text.
    :param source: a name for messages (usually the spec's file name).
    :param sections: the per-model sections plugins own (``Hooks.spec_sections``), each with
        its check; any other key of a model is unknown.
    :raises SpecError: bad YAML, a missing or mistyped section, an unknown key, a property that
        is not an integer or is below its minimum, min-workers above max-workers, a
        ``deadline-ms`` that is not a positive integer; under ``edges:`` a key that is not an
        edge of the dag, an unknown option, a condition that does not compile, a ``map`` that is
        not a boolean, combined with ``when``, or into a child with several parents (each
        naming the edge). The DAG is not validated here: call :meth:`WorkflowSpec.dag`.
    """
    doc = _load_yaml(text, source)
    if not isinstance(doc, dict):
        raise SpecError(f"{source}: the spec must be a mapping with 'models' and 'dag'")
    for key in doc:
        if key not in TOP_LEVEL_KEYS:
            raise _fail(f"unknown top-level key '{key}' (known: {', '.join(TOP_LEVEL_KEYS)})",
                        doc, key)
    for section in ("models", "dag"):
        if section not in doc:
            raise SpecError(f"{source}: missing '{section}:' section", key=section)
        if not isinstance(doc[section], dict):
            raise _fail(f"'{section}' must be a mapping", doc, section)
    global_props, global_ext, entries = _parse_models(doc["models"])
    globals_ = _config(global_props, doc["models"], "models")
    edges = _parse_dag(doc["dag"])
    conditions, maps = _parse_edges(doc["edges"], edges) if "edges" in doc else ({}, frozenset())
    deadline_ms = _deadline(doc)

    models = {
        name: _parse_model(name, entry, global_props, _line(doc["models"], name),
                           sections or {})
        for name, entry in entries.items()
    }
    names = list(dict.fromkeys([n for k, v in edges.items() for n in (k, *v)]))
    function_config = replace(
        globals_, min_workers=1, max_workers=1, batch_size=1, max_batch_delay=0
    )
    nodes: dict[str, NodeSpec] = {}
    for name in names:
        if name in models:
            nodes[name] = models[name]
        else:
            nodes[name] = NodeSpec(name, "function", function_config, line=_line(doc["dag"], name))
    unused = tuple(n for n in models if n not in nodes)
    return WorkflowSpec(globals_, nodes, edges, bool(global_ext.get("typed", False)), unused,
                        conditions, deadline_ms, maps)
