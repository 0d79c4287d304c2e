"""UCT values, visit counts and backpropagation on hand-built rollouts."""

from __future__ import annotations

import math

import pytest

from eagrl.mcts.tree import Tree


def _two_children():
    tree = Tree(exploration=1.0)
    a = tree.add_child(tree.root, "a", terminal=False)
    b = tree.add_child(tree.root, "b", terminal=False)
    return tree, a, b


def test_unvisited_children_are_tried_first():
    tree, a, b = _two_children()
    assert tree.uct(a, tree.root) == math.inf
    assert tree.select() is a  # ties go to the earliest child
    tree.simulate(a, 0.2)
    assert tree.select() is b


def test_visits_values_and_uct_after_hand_built_rollouts():
    tree, a, b = _two_children()
    tree.simulate(a, 0.2)
    tree.simulate(b, 0.8)
    assert (tree.root.visits, tree.root.value) == (2, pytest.approx(0.5))
    # values share the [0, 1] scale: UCT reads Q as it is; both children have one visit under a root with two
    assert tree.uct(a, tree.root) == pytest.approx(0.2 + math.sqrt(math.log(2)))
    assert tree.uct(b, tree.root) == pytest.approx(0.8 + math.sqrt(math.log(2)))
    assert tree.select() is b

    c = tree.add_child(b, "c", terminal=True)
    tree.simulate(c, 0.0, probability=0.1)  # e.g. an unreadable answer
    assert (c.visits, c.value, c.depth, c.details["probability"]) == (1, 0.0, 1, 0.1)
    assert (b.visits, b.value) == (2, pytest.approx(0.4))
    assert (tree.root.visits, tree.root.value) == (3, pytest.approx(1.0 / 3))
    assert tree.uct(a, tree.root) == pytest.approx(0.2 + math.sqrt(math.log(3)))
    assert tree.uct(b, tree.root) == pytest.approx(0.4 + math.sqrt(math.log(3) / 2))
    assert tree.select() is a
    assert c.answer() == "bc" and [node.index for node in c.path()] == [0, 2, 3]
    assert tree.terminals() == [c]
    assert tree.stats() == {"rollouts": 0, "nodes": 4, "terminals": 1, "max_depth": 1, "root_visits": 3}


def test_a_terminal_node_is_selected_and_never_expanded():
    tree = Tree()
    end = tree.add_child(tree.root, "end", terminal=True)
    tree.simulate(end, 0.3)
    assert tree.select() is end
    with pytest.raises(ValueError, match="terminal"):
        tree.add_child(end, "more", terminal=False)


@pytest.mark.parametrize("value", [math.nan, -5.0, 1.5])
def test_values_off_the_unit_scale_are_refused(value):
    tree, a, _ = _two_children()
    with pytest.raises(ValueError, match=r"MCTS values lie in \[0, 1\]"):
        tree.backpropagate(a, value)
    assert tree.root.visits == 0
