"""YAML text to plain Python data that remembers the line of every value, for text nobody vetted.

Anchors, aliases and ``<<`` merges are kept: a config with several sources that share settings
is shorter and safer with ``<<: *defaults`` than with copies. What they could do to a small
device is bounded instead: a recursive alias (``a: &x [*x]``) is refused where it is written,
and the values a file stands for, each use of an alias counted as a copy of what it names, may
not exceed MAX_VALUES nor nest deeper than MAX_DEPTH. A "billion laughs" file (nine anchors,
each ten aliases of the one before) stands for 10^9 values; it is refused after MAX_VALUES of
them, in milliseconds, instead of taking minutes and gigabytes. Duplicate keys are problems
that name both lines (YAML says keys are unique; PyYAML keeps the last one silently).
"""

from __future__ import annotations

from typing import Any

import yaml

from edge_agent.config.errors import ConfigIssue, dotted_path

#: Values in one config, counting each use of an alias as a copy. A real config holds tens to
#: a few thousand (50 sources, each with 5 stages of 10 options, is about 3,000).
MAX_VALUES = 20_000
#: Nesting levels; a config needs fewer than 10. The composer, this module and pydantic all
#: recurse, so deeper input would end in a RecursionError instead of a message.
MAX_DEPTH = 32

MERGE_TAG = "tag:yaml.org,2002:merge"

#: A path in the data (keys and list indexes) -> the line (1-based) where its value is written.
Lines = dict[tuple[Any, ...], int]


class YamlRefused(Exception):
    """Readable YAML this loader will not expand; ``line`` is where the trouble is written."""

    def __init__(self, line: int | None, message: str, path: str = "") -> None:
        super().__init__(message)
        self.line = line
        self.message = message
        self.path = path


def _line(mark: Any) -> int | None:  # a yaml.Mark, or None
    return mark.line + 1 if mark is not None else None


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, composing at most MAX_VALUES nodes MAX_DEPTH deep, refusing an
    alias inside the node it names (PyYAML registers an anchor before composing its children,
    so ``&x [*x]`` composes to a list that contains itself)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._open_anchors: list[str] = []
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self._open_anchors:
                raise YamlRefused(
                    _line(event.start_mark),
                    f"recursive alias: *{event.anchor} is inside the value &{event.anchor} names",
                )
            return super().compose_node(parent, index)
        self._nodes += 1
        if self._nodes > MAX_VALUES:
            raise YamlRefused(_line(event.start_mark), f"more than {MAX_VALUES} values in one file")
        if self._depth >= MAX_DEPTH:
            raise YamlRefused(_line(event.start_mark), f"nested more than {MAX_DEPTH} levels deep")
        anchor = getattr(event, "anchor", None)
        self._depth += 1
        if anchor:
            self._open_anchors.append(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1
            if anchor:
                self._open_anchors.pop()


class _Builder:
    """Walks the composed nodes into dicts, lists and scalars, counting every value it makes."""

    def __init__(self, loader: yaml.SafeLoader) -> None:
        self.loader = loader
        self.lines: Lines = {}
        self.issues: list[ConfigIssue] = []
        self.values = 0

    def build(self, node: yaml.Node, path: tuple[Any, ...], depth: int) -> Any:
        self.values += 1
        if self.values > MAX_VALUES:
            raise YamlRefused(
                _line(node.start_mark), f"aliases expand to more than {MAX_VALUES} values"
            )
        if depth > MAX_DEPTH:
            raise YamlRefused(
                _line(node.start_mark), f"aliases nest values more than {MAX_DEPTH} levels deep"
            )
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path, depth)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        return self._scalar(node, path)

    def _scalar(self, node: yaml.Node, path: tuple[Any, ...]) -> Any:
        try:
            return self.loader.construct_object(node)
        # PyYAML's scalar constructors raise ValueError, TypeError and others besides
        # ConstructorError for a malformed explicit tag (``!!int abc``, ``!!timestamp x``).
        except Exception as exc:
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            problem = getattr(exc, "problem", None) or str(exc)
            raise YamlRefused(
                _line(node.start_mark), f"cannot read this {tag}: {problem}", dotted_path(path)
            ) from exc

    def _mapping(self, node: yaml.MappingNode, path: tuple[Any, ...], depth: int) -> Any:
        out: dict[Any, Any] = {}
        # Merged keys first, the first mapping of a list winning; keys written here win over
        # all of them (YAML's merge key type, https://yaml.org/type/merge.html).
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                for source in reversed(self._merge_sources(value_node, path)):
                    out.update(self._mapping(source, path, depth))
        here: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                continue
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                self.issues.append(
                    ConfigIssue(dotted_path(path), line, "a key must be a name, not a list or map")
                )
                continue
            key = self._scalar(key_node, path)
            if key in here:
                self.issues.append(
                    ConfigIssue(
                        dotted_path((*path, key)),
                        line,
                        f"duplicate key: first at line {here[key]}, again at line {line}",
                    )
                )
                continue
            here[key] = line
            out[key] = self.build(value_node, (*path, key), depth + 1)
            self.lines[(*path, key)] = line  # the key's line, not the value's
        self.lines[path] = node.start_mark.line + 1
        return out

    def _merge_sources(self, node: yaml.Node, path: tuple[Any, ...]) -> list[yaml.MappingNode]:
        items = node.value if isinstance(node, yaml.SequenceNode) else [node]
        if all(isinstance(item, yaml.MappingNode) for item in items):
            return list(items)
        self.issues.append(
            ConfigIssue(
                dotted_path(path),
                _line(node.start_mark),
                "<< merges a map or a list of maps (e.g. <<: *defaults)",
            )
        )
        return [item for item in items if isinstance(item, yaml.MappingNode)]


def read_yaml(text: str) -> tuple[Any, Lines, list[ConfigIssue]]:
    """The data of one YAML document, the line of every path in it, and the duplicate keys.

    Raises YamlRefused for input that is not expanded (recursive, too large, too deep) and
    yaml.YAMLError for input that is not YAML."""
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}, []
        builder = _Builder(loader)
        data = builder.build(node, (), 0)
    finally:
        loader.dispose()
    # A duplicate inside a mapping that is merged elsewhere is reported once, at its own line.
    unique = {(issue.line, issue.message): issue for issue in reversed(builder.issues)}
    return data, builder.lines, sorted(unique.values(), key=lambda issue: issue.line or 0)
