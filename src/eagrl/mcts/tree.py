"""One patient's search tree: nodes, UCT selection and backpropagation (METHOD §5).

A node is the answer written so far: the root is the empty answer, a *step* node appends one
``<Subquestion> … </Subquestion> <Answer> … </Answer>`` pair, a *terminal* node appends the closing
``<Final subquestion>``, ``<Important Features>`` and ``<Final answer>``. A new child is simulated once
(a step by its usefulness P("Yes"), a terminal by the reward R) and that value is backed up to the root.

Selection descends by UCT, ``Q̃(child) + c·sqrt(ln N(parent) / N(child))``, where Q̃ is the mean backed-up value
min–max normalised over the tree (as in MuZero), so step values in [0, 1] and rewards in nats share one scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class Node:
    """A node of the tree.

    Attributes:
        index: creation order in its tree (0 = root); names the node in seeds and artifacts.
        text: what this node appends to its parent's answer ("" for the root).
        depth: (sub-question, answer) pairs on the path from the root, this node's included.
        terminal: whether the node closes the answer.
        parent: None for the root.
        children: expanded children, in creation order.
        visits: N, how many simulated values were backed up through this node.
        value_sum: the sum of those values (Q = value_sum / visits).
        simulated_value: the node's own simulation value (usefulness or reward), None before it is simulated.
        details: what the simulation measured (the parsed answer and reward terms of a terminal node).
    """

    index: int
    text: str = ""
    depth: int = 0
    terminal: bool = False
    parent: Node | None = None
    children: list[Node] = field(default_factory=list)
    visits: int = 0
    value_sum: float = 0.0
    simulated_value: float | None = None
    details: dict = field(default_factory=dict)

    @property
    def value(self) -> float:
        """Q: the mean backed-up value (0 before any visit)."""
        return self.value_sum / self.visits if self.visits else 0.0

    def path(self) -> list[Node]:
        """The nodes from the root to this one."""
        nodes, node = [], self
        while node is not None:
            nodes.append(node)
            node = node.parent
        return nodes[::-1]

    def answer(self) -> str:
        """The answer text written along the path (the root's text is empty)."""
        return "".join(node.text for node in self.path())


@dataclass
class MinMax:
    """Running bounds of Q values, to normalise them into [0, 1] (MuZero's MinMaxStats)."""

    low: float = math.inf
    high: float = -math.inf

    def update(self, value: float) -> None:
        self.low, self.high = min(self.low, value), max(self.high, value)

    def normalise(self, value: float) -> float:
        """(value − low) / (high − low); 0.5 while the bounds are not yet apart."""
        if self.high > self.low:
            return (value - self.low) / (self.high - self.low)
        return 0.5


class Tree:
    """The tree of one patient.

    Args:
        exploration: c of UCT (METHOD §5: 1.0).
    """

    def __init__(self, exploration: float = 1.0):
        self.exploration = exploration
        self.root = Node(index=0)
        self.nodes: list[Node] = [self.root]
        self.bounds = MinMax()
        self.rollouts = 0

    def uct(self, child: Node, parent: Node) -> float:
        """UCT score of ``child`` under ``parent``; an unvisited child scores +inf."""
        if child.visits == 0:
            return math.inf
        exploit = self.bounds.normalise(child.value)
        return exploit + self.exploration * math.sqrt(math.log(max(parent.visits, 1)) / child.visits)

    def select(self) -> Node:
        """Descend from the root by UCT to a node that is not expanded (a leaf or a terminal node).

        Ties go to the earliest child.
        """
        node = self.root
        while node.children:
            node = max(node.children, key=lambda child: self.uct(child, node))
        return node

    def add_child(self, parent: Node, text: str, terminal: bool) -> Node:
        """Append a child of ``parent``: a step (one more pair) or a terminal (the closing block)."""
        if parent.terminal:
            raise ValueError("a terminal node has no children")
        child = Node(
            index=len(self.nodes),
            text=text,
            depth=parent.depth + (not terminal),
            terminal=terminal,
            parent=parent,
        )
        parent.children.append(child)
        self.nodes.append(child)
        return child

    def backpropagate(self, node: Node, value: float) -> None:
        """Add one visit with ``value`` to ``node`` and every ancestor, updating the Q bounds."""
        if not math.isfinite(value):
            raise ValueError(f"cannot back up a non-finite value ({value}) from node {node.index}")
        while node is not None:
            node.visits += 1
            node.value_sum += value
            self.bounds.update(node.value)
            node = node.parent

    def simulate(self, node: Node, value: float, **details) -> None:
        """Record ``node``'s simulation value (and what it measured) and back it up."""
        node.simulated_value = value
        node.details.update(details)
        self.backpropagate(node, value)

    def terminals(self) -> list[Node]:
        """Terminal nodes that were simulated, in creation order (each one a complete answer)."""
        return [node for node in self.nodes if node.terminal and node.simulated_value is not None]

    def stats(self) -> dict:
        """Size and shape of the tree (for artifacts and logs)."""
        return {
            "rollouts": self.rollouts,
            "nodes": len(self.nodes),
            "terminals": len(self.terminals()),
            "max_depth": max(node.depth for node in self.nodes),
            "root_visits": self.root.visits,
        }
