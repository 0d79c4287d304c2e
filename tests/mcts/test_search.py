"""The search loop with a scripted engine (exact tree shape, phases, seeds and rewards) and with a real tiny
model (the prefix cache, batch independence)."""

from __future__ import annotations

import math
import re

import pytest
import torch

from eagrl.data.features import FeatureTable
from eagrl.errors import ConfigError
from eagrl.mcts.search import MCTS, clean, complete_paths
from eagrl.policy.backbone import byte_tokenizer
from eagrl.policy.engine import EngineStats, Generation, GenerationEngine, PrefixCache
from eagrl.policy.parsing import FeatureVocabulary
from eagrl.rewards import RewardConfig
from tests.configs import toy_search
from tests.policy.conftest import tiny

#: what the scripted policy writes in each span, by the span's stop string
SPANS = {
    "</Subquestion>": "Is LDH high?",
    "</Answer>": "Yes, 600 U/L",
    "</Important Features>": "LDH; Albumin",
    "</Final answer>": "0.8",
}
EXPERT = ("Lactate dehydrogenase", "High-sensitivity C-reactive protein")
MESSAGES = [{"role": "system", "content": "doctor"}, {"role": "user", "content": "a patient"}]


class ScriptedEngine:
    """Stands in for GenerationEngine: fixed spans, P(Yes) = 0.6 and P(No) = 0.2, every call recorded."""

    def __init__(self):
        self.tokenizer = byte_tokenizer()
        self.prefix_cache = PrefixCache()
        self.stats = EngineStats()
        self.calls: list[tuple] = []

    def add_prefixes(self, prompt_ids):
        self.calls.append(("prefixes", len(prompt_ids)))

    def generate(self, prompt_ids, sampling, num_samples=1, keys=None, on_batch=None, grammars=None):
        stop = sampling.stop_strings[0]
        self.calls.append((stop, len(prompt_ids), num_samples, list(keys)))
        text = f" {SPANS[stop]} {stop}"
        return [[Generation(text, [1], len(ids), "stop") for _ in range(num_samples)] for ids in prompt_ids]

    def next_token_probabilities(self, prompt_ids, token_ids):
        self.calls.append(("usefulness", len(prompt_ids)))
        return torch.tensor([[0.6, 0.2]] * len(prompt_ids))


@pytest.fixture(scope="module")
def vocabulary():
    return FeatureVocabulary(FeatureTable.load("tjh_features.csv"))


def _search(engine, vocabulary, rollouts=3, feature_names=(), **settings):
    searcher = MCTS(engine, vocabulary, toy_search(rollouts=rollouts, max_depth=2, **settings), RewardConfig())
    patients = [searcher.patient(pid, 1, MESSAGES, EXPERT, feature_names) for pid in ("p1", "p2")]
    searcher.run(patients)
    return searcher, patients


def test_tree_shape_phases_and_seeds(vocabulary):
    engine = ScriptedEngine()
    _, patients = _search(engine, vocabulary)
    tree = patients[0].tree
    # rollout 1: the root (depth 0 < min_depth 1) gets 3 steps; rollout 2: the first step gets 3 steps and
    # 1 closing answer; rollout 3: UCT prefers an unexpanded sibling (same usefulness, fewer visits)
    assert tree.stats() == {"rollouts": 3, "nodes": 12, "terminals": 2, "max_depth": 2, "root_visits": 11}
    assert [child.index for child in tree.root.children] == [1, 2, 3]
    assert [node.parent.index for node in tree.terminals()] == [1, 2]
    assert engine.calls[:5] == [
        ("prefixes", 2),
        ("</Subquestion>", 2, 3, ["p1/0/q", "p2/0/q"]),
        ("</Answer>", 6, 1, ["p1/0/a0", "p1/0/a1", "p1/0/a2", "p2/0/a0", "p2/0/a1", "p2/0/a2"]),
        ("usefulness", 6),
        ("</Subquestion>", 2, 3, ["p1/1/q", "p2/1/q"]),
    ]
    step = tree.root.children[0]
    assert step.text == "<Subquestion> Is LDH high? </Subquestion>\n<Answer> Yes, 600 U/L </Answer>\n"
    assert step.simulated_value == pytest.approx(0.75)  # 0.6 / (0.6 + 0.2)


def test_terminal_reward_is_the_formula(vocabulary):
    _, patients = _search(ScriptedEngine(), vocabulary)
    [path, _] = complete_paths(patients[0])
    assert path["completion"].endswith(
        "<Final subquestion> What is the probability of the outcome? </Final subquestion>\n"
        "<Important Features> LDH; Albumin </Important Features>\n<Final answer> 0.8 </Final answer>"
    )
    assert path["features"] == ["Lactate dehydrogenase", "Albumin"] and path["probability"] == 0.8
    r_cls = math.log(0.8) + 0.5 * (0.8 - 0.5)
    r_att = 1 / 3  # {LDH, Albumin} vs {LDH, hs-CRP}
    assert path["r_cls"] == pytest.approx(r_cls) and path["r_att"] == pytest.approx(r_att)
    assert path["r_total"] == pytest.approx(0.6 * r_cls + 0.4 * r_att)
    assert path["usefulness"] == [pytest.approx(0.75)] and path["depth"] == 1


def test_min_depth_zero_lets_the_root_answer_at_once(vocabulary):
    _, patients = _search(ScriptedEngine(), vocabulary, rollouts=1, min_depth=0)
    assert [node.terminal for node in patients[0].tree.root.children] == [False, False, False, True]


def test_without_a_final_subquestion_the_root_closes_in_the_features_then_answer_format(vocabulary):
    engine = ScriptedEngine()
    searcher = MCTS(
        engine, vocabulary, toy_search(rollouts=2, min_depth=0, max_depth=0, final_subquestion=None), RewardConfig()
    )
    patients = [searcher.patient("p1", 1, MESSAGES, EXPERT, ())]
    searcher.run(patients)
    [path] = complete_paths(patients[0])  # rollout 2 chose the closed answer again: no new node
    assert path["completion"] == (
        "<Important Features> LDH; Albumin </Important Features>\n<Final answer> 0.8 </Final answer>"
    )
    assert path["depth"] == 0 and path["steps"] == [] and patients[0].tree.root.visits == 2
    assert [call[0] for call in engine.calls] == ["prefixes", "</Important Features>", "</Final answer>"]


def test_no_final_subquestion_refuses_sub_questions():
    with pytest.raises(ConfigError, match="max_depth=0"):
        toy_search(final_subquestion=None, min_depth=0, max_depth=1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" Is LDH\n high? </Subquestion>", "Is LDH high?"),
        ("x <Answer> y", "x"),
        ("<final answer>", ""),
        ("a < 3", "a < 3"),
    ],
)
def test_clean_cuts_at_tags_the_model_wrote(text, expected):
    assert clean(text) == expected


def test_real_engine_reuses_each_prompt_and_does_not_depend_on_the_batch(vocabulary):
    model, tokenizer = tiny()
    runs = []
    for batch_size in (4, 64):
        engine = GenerationEngine(model, tokenizer, batch_size=batch_size, progress=False, prefix_cache=PrefixCache())
        settings = {"subquestion_tokens": 6, "answer_tokens": 6, "features_tokens": 6, "final_tokens": 3}
        searcher, patients = _search(engine, vocabulary, **settings)
        runs.append([[path["completion"] for path in complete_paths(patient)] for patient in patients])
        # each patient's prompt was encoded once: every later prompt reused it
        assert searcher.stats.reused_prompt_tokens > 10 * sum(len(p.prompt_ids) for p in patients)
    assert runs[0] == runs[1] and all(runs[0])


def test_a_searcher_needs_a_prefix_cache(vocabulary):
    model, tokenizer = tiny()
    with pytest.raises(ValueError, match="prefix cache"):
        MCTS(GenerationEngine(model, tokenizer, progress=False), vocabulary, toy_search(), RewardConfig())


def test_a_span_cut_by_its_budget_marks_the_path_not_closed(vocabulary):
    class CutAnswers(ScriptedEngine):
        def generate(self, prompt_ids, sampling, num_samples=1, keys=None, on_batch=None, grammars=None):
            answers = super().generate(prompt_ids, sampling, num_samples, keys, on_batch, grammars)
            if sampling.stop_strings[0] == "</Answer>":  # every answer to a sub-question runs out of tokens
                for row in answers:
                    row[0].finish_reason = "length"
            return answers

    for engine, closed in ((ScriptedEngine(), True), (CutAnswers(), False)):
        _, patients = _search(engine, vocabulary)
        assert {path["closed"] for path in complete_paths(patients[0])} == {closed}


@pytest.mark.parametrize("guided", [True, False])
def test_guided_closings_name_only_shown_features_and_parse(vocabulary, guided):
    """The random tiny model's closing spans: guided, every one names shown features and gives 0.dd; free, none."""
    model, tokenizer = tiny()
    engine = GenerationEngine(model, tokenizer, batch_size=32, progress=False, prefix_cache=PrefixCache())
    shown = ("LDH", "Albumin", "D-dimer")
    settings = {"subquestion_tokens": 4, "answer_tokens": 4, "features_tokens": 40, "final_tokens": 24}
    _, patients = _search(engine, vocabulary, 2, shown, guided=guided, guided_features=2, answer_children=2, **settings)
    paths = [path for patient in patients for path in complete_paths(patient)]
    assert len(paths) == 4  # 2 patients x 2 closings (the second rollout expands the first step)
    listed = [re.search(r"<Important Features> (.*) </Important Features>", path["completion"])[1] for path in paths]
    if guided:
        assert all(1 <= len(names.split("; ")) <= 2 and set(names.split("; ")) <= set(shown) for names in listed)
        assert {path["status"] for path in paths} == {"ok"}
        assert all(re.search(r"<Final answer> 0\.\d\d </Final answer>$", path["completion"]) for path in paths)
        known = {"Lactate dehydrogenase", "Albumin", "D-dimer"}  # canonical names of the shown ones
        assert all(path["features"] and set(path["features"]) <= known for path in paths)
    else:
        assert not any(set(names.split("; ")) <= set(shown) for names in listed)
        assert not any(path["status"] == "ok" for path in paths)


def test_final_samples_close_one_feature_list_with_several_probabilities(vocabulary):
    """``final_samples`` = 3: each sampled list becomes 3 terminal answers that share it, one probability each."""
    engine = ScriptedEngine()
    _, patients = _search(engine, vocabulary, final_samples=3)
    finals = [call for call in engine.calls if call[0] == "</Final answer>"]
    assert finals and all(samples == 3 for _, _, samples, _ in finals)
    paths = complete_paths(patients[0])
    assert len(paths) == 2 * 3  # the 2 closings of test_tree_shape_phases_and_seeds, 3 probabilities each
    parents = [node.parent.index for node in patients[0].tree.terminals()]
    assert sorted(parents) == [1, 1, 1, 2, 2, 2]
    with pytest.raises(ConfigError, match="final_samples must be >= 1"):
        toy_search(final_samples=0)
