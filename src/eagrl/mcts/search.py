"""Expert-guided MCTS over (sub-question, answer) steps, batched across patients (METHOD §5).

Every rollout runs in lockstep over a batch of patients: each tree selects a leaf by UCT, and all leaves are
expanded together through the :class:`~eagrl.policy.engine.GenerationEngine`, whose prefix cache holds each
patient's prompt, so a node only encodes the answer written so far. An expansion samples, under the PQD
scaffold (the tags are written by the search, the model fills them in):

- ``step_children`` steps: ``<Subquestion>`` → the model writes a sub-question, ``</Subquestion>\\n<Answer>`` →
  the model answers it; each step is simulated by its usefulness, the policy's P("Yes") to
  ``usefulness_question`` asked after it (normalised over Yes / No);
- ``answer_children`` closings once ``min_depth`` steps are written (only closings at ``max_depth``):
  ``<Final subquestion> … <Important Features>`` → the model lists features, ``<Final answer>`` → the model
  gives the probability (``final_samples`` probabilities per list, a few tokens each; with ``final_subquestion``
  None, the features-then-answer format of ``prompt=features_answer``: no sub-questions, the closing opens at
  ``<Important Features>``); each is simulated by the
  reward R (label and expert salient set: train split only) mapped onto [0, 1] by its attainable range
  (:func:`~eagrl.rewards.unit_reward`), the scale of usefulness.

With ``guided`` (the CPU default), the two closing spans are constrained token by token
(:mod:`eagrl.policy.guided`): the list to 1 to ``guided_features`` distinct names of the features the patient's
prompt shows with a value, the probability to ``0.dd``; steps stay free.

Sampling is seeded per (patient, node, phase, sample), so a patient's tree does not depend on the batch it
was searched in: a resumed search reproduces an uninterrupted one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from eagrl.errors import ConfigError
from eagrl.mcts.tree import Node, Tree
from eagrl.policy.engine import EngineStats, Generation, GenerationEngine, SamplingConfig
from eagrl.policy.guided import feature_list_grammar, probability_grammar
from eagrl.policy.parsing import FeatureVocabulary, parse_answer
from eagrl.rewards import RewardConfig, score_answer, unit_reward

#: a PQD tag the model wrote itself: its text is cut there (the search writes the tags)
TAG = re.compile(r"<\s*/?\s*(?:sub\s*question|answer|final|important)", re.I)


@dataclass(frozen=True)
class SearchConfig:
    """The ``mcts`` config group without its ``selection`` block (see conf/mcts/*.yaml for units); the defaults are
    the shipped ``mcts=cpu``'s (a test holds them equal)."""

    rollouts: int = 4
    exploration: float = 1.0
    step_children: int = 3
    answer_children: int = 2
    final_samples: int = 1
    min_depth: int = 1
    max_depth: int = 2
    temperature: float = 1.0
    top_p: float = 0.95
    top_k: int = 0
    subquestion_tokens: int = 32
    answer_tokens: int = 48
    features_tokens: int = 64
    final_tokens: int = 12
    final_subquestion: str | None = "What is the probability of the outcome?"
    usefulness_question: str = "Is the last sub-question useful for predicting the outcome? Answer Yes or No."
    guided: bool = True
    guided_features: int = 5
    guided_min_features: int = 3
    seed: int = 0

    def __post_init__(self):
        if min(self.rollouts, self.step_children, self.answer_children, self.final_samples) < 1:
            raise ConfigError(
                "mcts.rollouts, mcts.step_children, mcts.answer_children and mcts.final_samples must be >= 1"
            )
        if not 0 <= self.min_depth <= self.max_depth:
            raise ConfigError(f"mcts needs 0 <= min_depth <= max_depth, got {self.min_depth} and {self.max_depth}")
        if self.guided_features < 1:
            raise ConfigError(f"mcts.guided_features must be >= 1, got {self.guided_features}")
        if self.final_subquestion is None and self.max_depth > 0:
            raise ConfigError(
                "mcts.final_subquestion=null closes the answer in the features-then-answer format, which has no "
                "sub-questions: set mcts.min_depth=0 mcts.max_depth=0"
            )


@dataclass
class PatientSearch:
    """One patient under search.

    Attributes:
        patient_id: cohort id.
        label: outcome (0/1).
        messages: the chat prompt (system + user).
        prompt_text: the prompt with the chat template applied, ready for the assistant's turn.
        prompt_ids: its token ids.
        expert_features: the expert's salient set C_exp, restricted to features shown in the prompt.
        tree: the search tree.
        feature_names: the features a guided ``<Important Features>`` list may name (shown with a value).
    """

    patient_id: str
    label: int
    messages: list[dict[str, str]]
    prompt_text: str
    prompt_ids: list[int]
    expert_features: tuple[str, ...]
    tree: Tree
    feature_names: tuple[str, ...] = ()


def clean(text: str) -> str:
    """A generated span without a tag the model wrote itself, and with white space collapsed."""
    match = TAG.search(text)
    return " ".join((text[: match.start()] if match else text).split())


@dataclass
class MCTS:
    """Search the trees of a batch of patients.

    Args:
        engine: the generation engine (with a prefix cache).
        vocabulary: the dataset's feature names, to read declared features.
        search: search settings.
        reward: reward weights.
    """

    engine: GenerationEngine
    vocabulary: FeatureVocabulary
    search: SearchConfig
    reward: RewardConfig
    stats: EngineStats = field(default_factory=EngineStats)

    def __post_init__(self):
        if self.engine.prefix_cache is None:
            raise ValueError("MCTS needs an engine with a prefix cache")
        self.yes_no = [self._tokens(word)[0] for word in ("Yes", "No")]

    def patient(
        self, patient_id: str, label: int, messages: list[dict[str, str]], expert_features, feature_names=()
    ) -> PatientSearch:
        """A patient ready to search: its prompt encoded and an empty tree (``feature_names``: for ``guided``)."""
        prompt_text = self.engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return PatientSearch(
            patient_id=patient_id,
            label=label,
            messages=messages,
            prompt_text=prompt_text,
            prompt_ids=self._tokens(prompt_text),
            expert_features=tuple(expert_features),
            tree=Tree(self.search.exploration),
            feature_names=tuple(feature_names),
        )

    def run(self, patients: Sequence[PatientSearch]) -> None:
        """All rollouts of every patient's tree."""
        self.engine.add_prefixes([patient.prompt_ids for patient in patients])
        self.stats.accumulate(self.engine.stats)
        for _ in range(self.search.rollouts):
            self.rollout(patients)

    def rollout(self, patients: Sequence[PatientSearch]) -> None:
        """One selection–expansion–simulation–backup round for every patient."""
        leaves = []
        for patient in patients:
            patient.tree.rollouts += 1
            leaf = patient.tree.select()
            if leaf.terminal:  # a complete answer is chosen again: its reward is backed up once more
                patient.tree.backpropagate(leaf, leaf.simulated_value)
            else:
                leaves.append((patient, leaf))
        self._expand_steps([(patient, leaf) for patient, leaf in leaves if leaf.depth < self.search.max_depth])
        self._expand_answers([(patient, leaf) for patient, leaf in leaves if leaf.depth >= self.search.min_depth])

    def _tokens(self, text: str) -> list[int]:
        return self.engine.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _generate(
        self,
        patients_and_prefixes: list[tuple[PatientSearch, str]],
        keys: list[str],
        budget: int,
        stop: str,
        samples: int,
        grammars: list[str] | None = None,
    ) -> list[list[Generation]]:
        sampling = SamplingConfig(
            max_new_tokens=budget,
            temperature=self.search.temperature,
            top_p=self.search.top_p,
            top_k=self.search.top_k,
            stop_strings=(stop,),
            seed=self.search.seed,
        )
        prompts = [patient.prompt_ids + self._tokens(prefix) for patient, prefix in patients_and_prefixes]
        answers = self.engine.generate(prompts, sampling, num_samples=samples, keys=keys, grammars=grammars)
        self.stats.accumulate(self.engine.stats)
        return answers

    def _expand_steps(self, leaves: list[tuple[PatientSearch, Node]]) -> None:
        """Sample sub-questions, answer each, score each new step's usefulness."""
        if not leaves:
            return
        questions = self._generate(
            [(patient, leaf.answer() + "<Subquestion>") for patient, leaf in leaves],
            [f"{patient.patient_id}/{leaf.index}/q" for patient, leaf in leaves],
            self.search.subquestion_tokens,
            "</Subquestion>",
            self.search.step_children,
        )
        asked = [
            (patient, leaf, sample, f"{patient.patient_id}/{leaf.index}/a{number}")
            for (patient, leaf), samples in zip(leaves, questions, strict=True)
            for number, sample in enumerate(samples)
        ]
        replies = self._generate(
            [
                (patient, f"{leaf.answer()}<Subquestion> {clean(question.text)} </Subquestion>\n<Answer>")
                for patient, leaf, question, _ in asked
            ],
            [key for *_, key in asked],
            self.search.answer_tokens,
            "</Answer>",
            1,
        )
        children = []
        for (patient, leaf, question, _), (reply,) in zip(asked, replies, strict=True):
            text = f"<Subquestion> {clean(question.text)} </Subquestion>\n<Answer> {clean(reply.text)} </Answer>\n"
            child = patient.tree.add_child(leaf, text, terminal=False)
            child.details["finish"] = [question.finish_reason, reply.finish_reason]
            child.details["closed"] = closed_by_the_policy(question, reply)
            children.append((patient, child))
        probabilities = self.engine.next_token_probabilities(
            [self._usefulness_ids(patient, child) for patient, child in children], self.yes_no
        )
        self.stats.accumulate(self.engine.stats)
        for (patient, child), (yes, no) in zip(children, probabilities.tolist(), strict=True):
            usefulness = yes / (yes + no) if yes + no > 0 else 0.5
            patient.tree.simulate(child, usefulness, usefulness=usefulness)

    def _usefulness_ids(self, patient: PatientSearch, node: Node) -> list[int]:
        """The prompt, the answer so far as the assistant's turn, then the usefulness question as the user's."""
        messages = [
            *patient.messages,
            {"role": "assistant", "content": node.answer()},
            {"role": "user", "content": self.search.usefulness_question},
        ]
        text = self.engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        if text.startswith(patient.prompt_text):  # reuse the cached prompt (true for ChatML and most templates)
            return patient.prompt_ids + self._tokens(text[len(patient.prompt_text) :])
        return self._tokens(text)

    def _expand_answers(self, leaves: list[tuple[PatientSearch, Node]]) -> None:
        """Sample closing blocks (features, then the probability) and score each with the reward."""
        if not leaves:
            return
        question = self.search.final_subquestion
        asked = f"<Final subquestion> {question} </Final subquestion>\n" if question is not None else ""
        opening = f"{asked}<Important Features>"
        listed = self._generate(
            [(patient, leaf.answer() + opening) for patient, leaf in leaves],
            [f"{patient.patient_id}/{leaf.index}/f" for patient, leaf in leaves],
            self.search.features_tokens,
            "</Important Features>",
            self.search.answer_children,
            [
                feature_list_grammar(
                    patient.feature_names, self.search.guided_features, self.search.guided_min_features
                )
                for patient, _ in leaves
            ]
            if self.search.guided
            else None,
        )
        closing = [
            (
                patient,
                leaf,
                sample,
                f"{opening} {clean(sample.text)} </Important Features>\n<Final answer>",
                f"{patient.patient_id}/{leaf.index}/p{number}",
            )
            for (patient, leaf), samples in zip(leaves, listed, strict=True)
            for number, sample in enumerate(samples)
        ]
        finals = self._generate(
            [(patient, leaf.answer() + prefix) for patient, leaf, _, prefix, _ in closing],
            [key for *_, key in closing],
            self.search.final_tokens,
            "</Final answer>",
            self.search.final_samples,
            [probability_grammar()] * len(closing) if self.search.guided else None,
        )
        for (patient, leaf, listing, prefix, _), samples in zip(closing, finals, strict=True):
            for final in samples:
                self._close(patient, leaf, listing, prefix, final)

    def _close(self, patient: PatientSearch, leaf: Node, listing: Generation, prefix: str, final: Generation) -> None:
        """Add one closing answer (a feature list and a probability) under ``leaf`` and simulate it by its reward."""
        child = patient.tree.add_child(leaf, f"{prefix} {clean(final.text)} </Final answer>", terminal=True)
        parsed = parse_answer(child.answer(), self.vocabulary)
        child.details["finish"] = [listing.finish_reason, final.finish_reason]
        # the probability span is a few tokens: it counts as closed when a probability could be read from it
        child.details["closed"] = closed_by_the_policy(listing) and (final.finish_reason == "stop" or parsed.parsed)
        terms = score_answer(parsed, patient.label, patient.expert_features, self.reward)
        patient.tree.simulate(
            child,
            unit_reward(terms, self.reward),
            r_total=terms.total,
            probability=parsed.probability,
            status=parsed.status,
            features=list(parsed.features),
            r_cls=terms.cls,
            r_att=terms.att,
        )


def closed_by_the_policy(*spans: Generation) -> bool:
    """Whether the policy closed each of these spans with its tag itself (not cut by the token budget or EOS)."""
    return all(span.finish_reason == "stop" for span in spans)


def complete_paths(patient: PatientSearch) -> list[dict]:
    """Every complete answer of a searched tree, with its steps, reward terms and search statistics."""
    paths = []
    for node in patient.tree.terminals():
        steps = node.path()[1:-1]
        paths.append(
            {
                "node": node.index,
                "depth": node.depth,
                "steps": [step.text for step in steps],
                "usefulness": [step.details["usefulness"] for step in steps],
                "final": node.text,
                "completion": node.answer(),
                "visits": node.visits,
                "q_value": node.value,
                **node.details,
                # the whole path, not only the closing block: every span closed by the policy itself
                "closed": all(step.details["closed"] for step in node.path()[1:]),
            }
        )
    return paths
