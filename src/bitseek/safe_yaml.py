"""``yaml.safe_load`` with alias expansion bounded, so a few hundred bytes cannot become gigabytes.

PyYAML builds aliases as shared references, which is cheap to load; the cost comes later, when a
config is copied, merged, printed or coerced and each reference is walked as if it were its own
copy ("billion laughs": nine aliases per level, ten levels, 9**10 nodes). Before constructing
anything we count the nodes the document would have with every alias expanded and refuse it when
aliases multiply it beyond :data:`MAX_EXPANDED_NODES`.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["MAX_EXPANDED_NODES", "AliasBombError", "safe_load"]

MAX_EXPANDED_NODES = 100_000


class AliasBombError(yaml.YAMLError):
    """A document whose aliases expand beyond the bound."""


def _expanded_size(root: yaml.Node, limit: int) -> tuple[int, int]:
    """(nodes with every alias expanded, distinct nodes); stops counting past ``limit``."""
    memo: dict[int, int] = {}
    visiting: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:  # iterative post-order, so deep nesting cannot overflow the Python stack
        node, done = stack.pop()
        key = id(node)
        if key in memo:
            continue
        if not done and key in visiting:  # met again inside its own subtree
            raise AliasBombError("a YAML alias refers to a node that contains it (a recursive structure)")
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        if done:
            memo[key] = min(limit + 1, 1 + sum(memo[id(c)] for c in children))
            visiting.discard(key)
            continue
        visiting.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in memo)
    return memo[id(root)], len(memo)


def safe_load(text: str, limit: int = MAX_EXPANDED_NODES) -> Any:
    """Like ``yaml.safe_load``, but raises :class:`AliasBombError` for an alias expansion past ``limit``."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        expanded, distinct = _expanded_size(node, limit)
        if expanded > limit and expanded > 2 * distinct:
            raise AliasBombError(f"YAML aliases expand to more than {limit} nodes ({distinct} written); "
                                 "refusing a document that multiplies itself through anchors")
        return loader.construct_document(node)
    finally:
        loader.dispose()
