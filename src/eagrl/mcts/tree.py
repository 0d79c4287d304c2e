"""One patient's search tree: nodes, UCT selection and backpropagation (METHOD §5).

A node is the answer written so far: the root is the empty answer, a *step* node appends one
``<Subquestion> … </Subquestion> <Answer> … </Answer>`` pair, a *terminal* node appends the closing
``<Final subquestion>``, ``<Important Features>`` and ``<Final answer>``. A new child is simulated once
(a step by its usefulness P("Yes"), a terminal by the reward R) and that value is backed up to the root.

Selection descends by UCT, ``Q(child) + c·sqrt(ln N(parent) / N(child))``, where Q is the mean backed-up value.
Every simulated value lies in [0, 1] (a step's usefulness is a probability, a terminal's reward is mapped onto
[0, 1] by its attainable range): one fixed scale, so a parse failure (0) and a confident right answer (near 1)
are comparable with a useful step, and the exploration constant keeps its meaning across trees.
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


class Tree:
    """The tree of one patient.

    Args:
        exploration: c of UCT (METHOD §5: 1.0).
    """

    def __init__(self, exploration: float = 1.0):
        self.exploration = exploration
        self.root = Node(index=0)
        self.nodes: list[Node] = [self.root]
        self.rollouts = 0

    def uct(self, child: Node, parent: Node) -> float:
        """UCT score of ``child`` under ``parent``; an unvisited child scores +inf."""
        if child.visits == 0:
            return math.inf
        return child.value + self.exploration * math.sqrt(math.log(max(parent.visits, 1)) / child.visits)

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
        """Add one visit with ``value`` (in [0, 1]) to ``node`` and every ancestor."""
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"cannot back up {value} from node {node.index}: MCTS values lie in [0, 1]")
        while node is not None:
            node.visits += 1
            node.value_sum += value
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
