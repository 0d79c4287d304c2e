"""UCT values, visit counts and backpropagation on hand-built rollouts."""

from __future__ import annotations

import math

import pytest

from eagrl.mcts.tree import MinMax, Tree


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
    # Q bounds [0.2, 0.8]: a normalises to 0, b to 1; both have one visit under a root with two
    assert tree.uct(a, tree.root) == pytest.approx(0 + math.sqrt(math.log(2)))
    assert tree.uct(b, tree.root) == pytest.approx(1 + math.sqrt(math.log(2)))
    assert tree.select() is b

    c = tree.add_child(b, "c", terminal=True)
    tree.simulate(c, -1.0, probability=0.1)
    assert (c.visits, c.value, c.depth, c.details["probability"]) == (1, -1.0, 1, 0.1)
    assert (b.visits, b.value) == (2, pytest.approx(-0.1))
    assert (tree.root.visits, tree.root.value) == (3, pytest.approx(0.0))
    # bounds are now [-1, 0.8]
    assert tree.bounds.low == -1.0 and tree.bounds.high == 0.8
    assert tree.uct(a, tree.root) == pytest.approx(1.2 / 1.8 + math.sqrt(math.log(3)))
    assert tree.uct(b, tree.root) == pytest.approx(0.9 / 1.8 + math.sqrt(math.log(3) / 2))
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


def test_non_finite_values_are_refused():
    tree, a, _ = _two_children()
    with pytest.raises(ValueError, match="non-finite"):
        tree.backpropagate(a, math.nan)
    assert tree.root.visits == 0


def test_minmax_normalisation():
    bounds = MinMax()
    assert bounds.normalise(3.0) == 0.5
    bounds.update(-2.0)
    bounds.update(2.0)
    assert bounds.normalise(1.0) == pytest.approx(0.75)
