"""Located YAML: PyYAML's safe loader, bounded, building mappings and sequences that remember
where each of their keys and values is in the file, so that every problem can name its line.

`load_yaml` parses a document (syntax problems come back as `ConfigIssue` objects);
`locate` finds the position of a value by its path; `field_path` writes a path as the dotted
field name used in messages (``virtual_services[0].port``).  Pure: no file access.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Any

import yaml

from director.config.issues import ConfigIssue, escape

__all__ = [
    "MAX_YAML_DEPTH",
    "MAX_YAML_NODES",
    "LocatedLoader",
    "Path",
    "Position",
    "YamlMap",
    "YamlSeq",
    "field_path",
    "load_yaml",
    "locate",
]

#: Deepest nesting of YAML mappings and sequences accepted (the format itself needs 6).
MAX_YAML_DEPTH = 32
#: Most YAML values (scalars, mappings, sequences) in one document, counting what an alias
#: refers to at each use, so that a few aliases cannot multiply the work of validation.
MAX_YAML_NODES = 2_000_000


#: (line, column), both 1-based.
Position = tuple[int, int]


def _position(mark: yaml.Mark) -> Position:
    return (mark.line + 1, mark.column + 1)


class YamlMap(dict[Any, Any]):
    """A constructed YAML mapping that knows where it, its keys and its values are.

    Attributes:
        pos: position of the mapping itself.
        key_pos / value_pos: position of each key / of each key's value.
        duplicates: ``(key, position of the repeated key, position of the first)``
            for every key written twice in this mapping (the first one is kept).
    """

    __slots__ = ("duplicates", "key_pos", "pos", "value_pos")

    def __init__(self, pos: Position) -> None:
        super().__init__()
        self.pos = pos
        self.key_pos: dict[Any, Position] = {}
        self.value_pos: dict[Any, Position] = {}
        self.duplicates: list[tuple[Any, Position, Position]] = []


class YamlSeq(list[Any]):
    """A constructed YAML sequence that knows where it and each item are (``pos``, ``item_pos``)."""

    __slots__ = ("item_pos", "pos")

    def __init__(self, pos: Position, item_pos: list[Position]) -> None:
        super().__init__()
        self.pos = pos
        self.item_pos = item_pos


class LocatedLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that builds `YamlMap`/`YamlSeq` and records duplicate keys.

    Duplicate keys are not raised (so that all problems can be reported at
    once) but stored in `YamlMap.duplicates`; keys brought in by a ``<<`` merge
    may be overridden as YAML intends and are not duplicates.
    """

    _MERGE_TAG = "tag:yaml.org,2002:merge"

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0
        self._expanded = 0
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: Any, index: Any) -> Any:
        """PyYAML's composer, bounded: nesting up to `MAX_YAML_DEPTH`, at most `MAX_YAML_NODES` values.

        An alias counts as many values as the node it refers to; an alias to
        a node that contains it (a recursive structure) is refused.
        """
        # the PyYAML stubs leave the parser's peek_event untyped; this pure-Python parser's marks are yaml.Mark
        mark: yaml.Mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
        alias = self.check_event(yaml.AliasEvent)
        if not alias:
            if self._depth >= MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nesting deeper than {MAX_YAML_DEPTH} levels of mappings and lists", mark
                )
            self._depth += 1
        before = self._expanded
        try:
            node = super().compose_node(parent, index)
        finally:
            if not alias:
                self._depth -= 1
        if alias:
            size = self._sizes.get(id(node))
            if size is None:
                raise yaml.composer.ComposerError(
                    None, None, "an alias refers to a node that contains it (recursive structure)", mark
                )
            self._expanded += size
        else:
            self._expanded += 1
            self._sizes[id(node)] = self._expanded - before
        if self._expanded > MAX_YAML_NODES:
            raise yaml.composer.ComposerError(
                None, None, f"more than {MAX_YAML_NODES} values (what an alias refers to counts at each use)", mark
            )
        return node

    def get_single_data(self) -> Any:
        """PyYAML's, but the composed node tree is taken apart a piece at a time once the data
        is built (`release_nodes`): dropped at once, the tree of a large file (millions of nodes
        with their marks) is freed in one C call that holds the interpreter lock, and with it the
        daemon's loop, for up to 0.5 s."""
        node = self.get_single_node()
        if node is None:
            return None
        try:
            return self.construct_document(node)
        finally:
            self._sizes.clear()
            release_nodes(node)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """PyYAML's constructor; a value it cannot build (an integer of over 4300 digits...) is a located error."""
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as err:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"cannot read this {node.tag.rsplit(':', 1)[-1]} value: {escape(str(err)[:120])}",
                node.start_mark,
            ) from None

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> YamlMap:
        if not isinstance(node, yaml.MappingNode):
            # every node class PyYAML builds (scalar, sequence, mapping) has an id; the stubs' Node has none
            kind = node.id  # type: ignore[attr-defined]
            raise yaml.constructor.ConstructorError(
                None, None, f"expected a mapping node, but found {kind}", node.start_mark
            )
        data = YamlMap(_position(node.start_mark))
        self._fill_mapping(data, node, deep)
        return data

    def _fill_mapping(self, data: YamlMap, node: yaml.MappingNode, deep: bool) -> None:
        own_keys = {id(key) for key, _ in node.value if key.tag != self._MERGE_TAG}
        self.flatten_mapping(node)  # resolves "<<" merges: merged pairs first, own pairs last
        first_seen: dict[Any, Position] = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark, "found unhashable key", key_node.start_mark
                )
            key_pos = _position(key_node.start_mark)
            if id(key_node) in own_keys:
                if key in first_seen:
                    data.duplicates.append((key, key_pos, first_seen[key]))
                    continue
                first_seen[key] = key_pos
            data[key] = self.construct_object(value_node, deep=deep)
            data.key_pos[key] = key_pos
            data.value_pos[key] = _position(value_node.start_mark)

    def construct_located_map(self, node: yaml.MappingNode) -> Iterator[YamlMap]:
        data = YamlMap(_position(node.start_mark))
        yield data
        self._fill_mapping(data, node, deep=False)

    def construct_located_seq(self, node: yaml.SequenceNode) -> Iterator[YamlSeq]:
        data = YamlSeq(_position(node.start_mark), [_position(item.start_mark) for item in node.value])
        yield data
        data.extend(self.construct_sequence(node))


#: Items moved out of a node's list per step of `release_nodes`.
_RELEASE_CHUNK = 1024


def release_nodes(root: yaml.Node) -> None:
    """Take the YAML node tree under ``root`` apart from the leaves up, a few nodes per step, so
    that no single step frees more than `_RELEASE_CHUNK` objects: a thread doing this lets the
    others run (the interpreter switches between bytecodes, not inside one deallocation).
    Nodes reached twice (aliases) are simply found empty the second time."""
    stack: list[Any] = [root]
    while stack:
        item = stack.pop()
        if isinstance(item, yaml.Node):
            value = item.value
            if isinstance(value, list):
                item.value = []
                stack.append(value)
        elif isinstance(item, list):
            if item:
                stack.append(item)  # the rest of it, after this chunk
                stack.extend(item[-_RELEASE_CHUNK:])
                del item[-_RELEASE_CHUNK:]
        elif isinstance(item, tuple):  # a mapping node's (key, value) pair
            stack.extend(item)


LocatedLoader.add_constructor("tag:yaml.org,2002:map", LocatedLoader.construct_located_map)
LocatedLoader.add_constructor("tag:yaml.org,2002:seq", LocatedLoader.construct_located_seq)


def load_yaml(text: str, file: str) -> tuple[Any, list[ConfigIssue]]:
    """Parse the YAML document ``text`` (``file`` names it in issues) with `LocatedLoader`.

    Returns ``(data, issues)``: the located data (`YamlMap`, `YamlSeq` and scalars; ``None`` for an
    empty document or on error) and the syntax problems, at most one, located.  Never raises for
    bad input: a nesting deeper than `MAX_YAML_DEPTH`, more than `MAX_YAML_NODES` values, an
    unprintable character or a value PyYAML cannot build is an issue.
    """
    loader: LocatedLoader | None = None
    try:
        loader = LocatedLoader(text)  # the reader checks for unprintable characters here
        return loader.get_single_data(), []
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line, column = _position(mark) if mark is not None else (1, 1)
        message = f"invalid YAML: {err.problem or err.context}"
        if err.context and err.problem:
            where = f" started on line {err.context_mark.line + 1}" if err.context_mark is not None else ""
            message += f" ({err.context}{where})"
        return None, [ConfigIssue(file, line, column, "", message)]
    except yaml.reader.ReaderError as err:
        before = text[: err.position]
        line = before.count("\n") + 1
        column = err.position - (before.rfind("\n") + 1) + 1
        char = err.character if isinstance(err.character, int) else ord(err.character)
        return None, [ConfigIssue(file, line, column, "", f"invalid YAML: unacceptable character U+{char:04X}")]
    except yaml.YAMLError as err:  # pragma: no cover - every PyYAML error above carries a position
        return None, [ConfigIssue(file, 1, 1, "", f"invalid YAML: {err}")]
    finally:
        if loader is not None:
            loader.dispose()


#: A path into loaded data: keys and list indexes, e.g. ``("virtual_services", 0, "port")``.
Path = tuple[Any, ...]


def field_path(path: Path) -> str:
    """``("virtual_services", 0, "port")`` -> ``virtual_services[0].port``."""
    out = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def locate(root: Any, path: Path, at_key: bool = False) -> Position:
    """Position of the value at ``path`` in located data.

    Where the path leaves the data (a missing key), the position of the deepest
    existing mapping or sequence is returned.  With ``at_key``, the position of
    the last key itself rather than of its value.
    """
    node = root
    pos: Position = getattr(root, "pos", (1, 1))
    for index, part in enumerate(path):
        last = index == len(path) - 1
        if isinstance(node, YamlMap) and isinstance(part, Hashable) and part in node:
            pos = node.key_pos[part] if (last and at_key) else node.value_pos[part]
            node = node[part]
        elif isinstance(node, YamlSeq) and isinstance(part, int) and 0 <= part < len(node):
            pos = node.item_pos[part]
            node = node[part]
        else:
            break
    return pos
