"""``EHRDataModule``: the one data source of every stage (experts, MCTS, SFT, RL, evaluation).

Experts get padded tensors, z-normalised with train statistics after LOCF (train medians where nothing was
observed yet); LLM stages get :class:`~eagrl.data.prompt.PatientRecord` objects with LOCF-only raw values.
Both come from the same cached split, so no patient ever changes split between stages. To apply a trained expert
to another cohort, pass the statistics it was trained with (``normalisation``, saved in its artifact) instead of
fitting them on this cohort's train split (an external cohort, ``dataset.split=none``, has none).

    dm = EHRDataModule(dataset=cfg.dataset, task="mortality", raw_source="../shared/data", data_dir="data")
    dm.prepare_data(); dm.setup()
    batch = next(iter(dm.train_dataloader()))   # batch["values"]: (B, T, F)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

from eagrl.data.cohort import SPLITS, Cohort, is_unsplit, prepare_cohort
from eagrl.data.features import FeatureTable
from eagrl.data.prompt import ChatPrompt, PatientRecord, build_prompt
from eagrl.data.transforms import FeatureStats, impute_and_normalise, locf, pad_visits
from eagrl.errors import ConfigError

log = logging.getLogger(__name__)

#: seed of ``max_patients`` samples of a cohort without a split protocol (``dataset.split=none``)
UNSPLIT_SAMPLE_SEED = 42


def stratified_sample(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Ascending row indices of ``count`` of the ``labels`` (n,), drawn without replacement, each outcome holding
    its share of ``count`` (largest remainder); all rows when ``count`` >= n."""
    if count >= len(labels):
        return np.arange(len(labels))
    outcomes, sizes = np.unique(labels, return_counts=True)
    shares = sizes * count / len(labels)
    quotas = np.floor(shares).astype(int)
    quotas[np.argsort(quotas - shares, kind="stable")[: count - quotas.sum()]] += 1
    rng = np.random.default_rng(seed)
    drawn = [
        rng.permutation(np.flatnonzero(labels == outcome))[:quota]
        for outcome, quota in zip(outcomes, quotas, strict=True)
    ]
    return np.sort(np.concatenate(drawn))


@dataclass(frozen=True)
class Normalisation:
    """The statistics expert inputs are normalised with, by feature (fit on a training cohort's train split).

    Attributes:
        static_names, dynamic_names: canonical feature names, in the order of the statistics' entries.
        static, dynamic: the statistics, (S,) and (F,) each.
    """

    static_names: list[str]
    dynamic_names: list[str]
    static: FeatureStats
    dynamic: FeatureStats

    def to_json(self) -> dict:
        """``{"static": {"names", "mean", "std", "median"}, "dynamic": {...}}`` (floats exact for float32)."""
        return {
            kind: {"names": list(names), **{key: getattr(stats, key).tolist() for key in ("mean", "std", "median")}}
            for kind, names, stats in (
                ("static", self.static_names, self.static),
                ("dynamic", self.dynamic_names, self.dynamic),
            )
        }

    @classmethod
    def from_json(cls, content: dict) -> Normalisation:
        """Inverse of :meth:`to_json`."""

        def stats(block: dict) -> FeatureStats:
            return FeatureStats(*(np.asarray(block[key], dtype=np.float32) for key in ("mean", "std", "median")))

        return cls(
            static_names=list(content["static"]["names"]),
            dynamic_names=list(content["dynamic"]["names"]),
            static=stats(content["static"]),
            dynamic=stats(content["dynamic"]),
        )


@dataclass
class SplitArrays:
    """All of one split's patients as arrays (n patients, T padded visits, F dynamic, S static features).

    Attributes:
        patient_ids: (n,) ids in cache order.
        raw: (n, T, F) raw values, NaN for missing or padding.
        values: (n, T, F) LOCF + train-median imputed, z-normalised with train statistics.
        observed: (n, T, F) True where a value was measured at that visit.
        times: (n, T) visit times in the dataset's unit (0 on padding).
        lengths: (n,) real visits per patient.
        static: (n, S) imputed and normalised static features; static_raw the raw ones.
        labels: (n,) 0/1 outcome of the configured task.
        time_labels: per patient, the visit time labels used in prompts.
    """

    patient_ids: list[str]
    raw: np.ndarray
    values: np.ndarray
    observed: np.ndarray
    times: np.ndarray
    lengths: np.ndarray
    static: np.ndarray
    static_raw: np.ndarray
    labels: np.ndarray
    time_labels: list[tuple[str, ...]]


class EHRTensorDataset(Dataset):
    """Index -> dict of tensors for one patient (visit axis padded to the split's longest stay)."""

    def __init__(self, arrays: SplitArrays):
        self.arrays = arrays
        steps = arrays.values.shape[1]
        self.visit_mask = np.arange(steps)[None, :] < arrays.lengths[:, None]

    def __len__(self) -> int:
        return len(self.arrays.patient_ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        arrays = self.arrays
        return {
            "values": torch.from_numpy(arrays.values[index]),
            "observed": torch.from_numpy(arrays.observed[index]),
            "times": torch.from_numpy(arrays.times[index]),
            "visit_mask": torch.from_numpy(self.visit_mask[index]),
            "length": torch.tensor(arrays.lengths[index]),
            "static": torch.from_numpy(arrays.static[index]),
            "label": torch.tensor(arrays.labels[index], dtype=torch.float32),
            "index": torch.tensor(index),
        }


class EHRDataModule(L.LightningDataModule):
    """One split of one dataset and task, as tensors for experts and as records/prompts for LLMs.

    Args:
        dataset: the ``dataset`` config group.
        task: label column to predict (``task.name``), e.g. ``mortality``.
        raw_source: folder with the raw files, or ``upstream``.
        data_dir: local data cache root.
        batch_size: patients per optimiser step over all processes: each of N data-parallel processes loads
            ``batch_size // N``, so ``trainer.devices`` changes the speed, not the optimisation.
        num_workers: DataLoader worker processes.
        normalisation: statistics to normalise expert inputs with (a trained expert's, to score another cohort);
            ``None`` fits them on this cohort's train split. Their feature names must be the cohort's.
    """

    def __init__(
        self,
        dataset: DictConfig,
        task: str,
        raw_source: str,
        data_dir: str,
        batch_size: int = 64,
        num_workers: int = 0,
        normalisation: Normalisation | None = None,
    ):
        super().__init__()
        if task not in dataset.labels:
            raise ConfigError(
                f"task {task!r} is not available for dataset {dataset.name!r} (labels: {list(dataset.labels)})"
            )
        self.dataset_cfg, self.task = dataset, task
        self.raw_source, self.data_dir = raw_source, data_dir
        self.batch_size, self.num_workers = batch_size, num_workers
        self.cohort_dir: Path | None = None
        self.cohort: Cohort | None = None
        self.arrays: dict[str, SplitArrays] = {}
        self.dynamic_stats: FeatureStats | None = None
        self.static_stats: FeatureStats | None = None
        self.given_normalisation = normalisation

    def prepare_data(self) -> None:
        """Obtain, verify and process the raw data once (a no-op when the cache is up to date)."""
        self.cohort_dir = prepare_cohort(self.dataset_cfg, self.raw_source, self.data_dir)

    def setup(self, stage: str | None = None) -> None:
        """Load the cached cohort and build every split's arrays with train-only statistics."""
        if self.arrays:
            return
        if self.cohort_dir is None:
            self.prepare_data()
        self.cohort = Cohort.load(self.cohort_dir)
        features = self.features
        raw = {split: self._raw_split(split) for split in SPLITS}
        if self.given_normalisation is not None:
            self._check_names(self.given_normalisation)
            self.dynamic_stats, self.static_stats = self.given_normalisation.dynamic, self.given_normalisation.static
        else:
            train_ids, train_values, _, _, train_static = raw["train"]
            if not train_ids:
                log.info("%s has no train split, so no normalisation statistics of its own (LLM stages read raw "
                         "values; an expert scores it with its artifact's: eagrl-expert artifact=...)",
                         self.cohort.name)  # fmt: skip
            self.dynamic_stats = FeatureStats.fit(train_values)
            self.static_stats = FeatureStats.fit(train_static)
        time_labels = self.cohort.visits.groupby("patient_id", sort=False)["time_label"].agg(tuple)
        patients = self.cohort.patients.set_index("patient_id")
        for split, (ids, values, times, lengths, static) in raw.items():
            self.arrays[split] = SplitArrays(
                patient_ids=ids,
                raw=values,
                values=impute_and_normalise(values, self.dynamic_stats),
                observed=~np.isnan(values),
                times=times,
                lengths=lengths,
                static=impute_and_normalise(static, self.static_stats),
                static_raw=static,
                labels=patients.loc[ids, self.task].to_numpy(dtype=np.int64),
                time_labels=list(time_labels.loc[ids]),
            )
        log.info(
            "%s: %s features (%d static + %d dynamic), splits %s",
            self.cohort.name,
            len(features.all),
            len(features.static),
            len(features.dynamic),
            {split: len(arrays.patient_ids) for split, arrays in self.arrays.items()},
        )

    @property
    def normalisation(self) -> Normalisation:
        """The statistics expert inputs were normalised with (after :meth:`setup`), by feature name."""
        if self.dynamic_stats is None:
            raise RuntimeError("call setup() first")
        return Normalisation(
            self.features.static_names, self.features.dynamic_names, self.static_stats, self.dynamic_stats
        )

    def _check_names(self, normalisation: Normalisation) -> None:
        """A one-line error when ``normalisation`` belongs to other features than this cohort's."""
        for kind, expected, actual in (
            ("static", normalisation.static_names, self.features.static_names),
            ("dynamic", normalisation.dynamic_names, self.features.dynamic_names),
        ):
            if expected != actual:
                missing = [name for name in expected if name not in actual]
                extra = [name for name in actual if name not in expected]
                detail = (
                    f"the model's feature {missing[0]!r} is not in it" if missing
                    else f"its feature {extra[0]!r} is not the model's" if extra
                    else "the same names in another order"
                )  # fmt: skip
                raise ConfigError(
                    f"dataset {self.dataset_cfg.name!r} has other {kind} features than the model ({detail}); use a "
                    f"dataset.features_file with the model's {len(expected)} {kind} features (a feature a cohort "
                    "did not measure can be left out of its data files, not out of the feature table)"
                )

    def _raw_split(self, split: str):
        ids = self.cohort.split_ids(split)
        visits = self.cohort.visits[self.cohort.visits["patient_id"].isin(ids)]
        values, times, lengths = pad_visits(visits, ids, self.features.dynamic_names)
        patients = self.cohort.patients.set_index("patient_id").loc[ids]
        static = patients[self.features.static_names].to_numpy(dtype=np.float32)
        return ids, values, times, lengths, static

    @property
    def features(self) -> FeatureTable:
        """The dataset's feature table (static then dynamic order everywhere)."""
        if self.cohort is None:
            raise RuntimeError("call setup() first")
        return self.cohort.features

    def records(self, split: str, max_patients: int | None = None) -> list[PatientRecord]:
        """Patients of ``split`` for prompting: raw units, LOCF only, in split order.

        ``max_patients`` keeps a label-stratified sample of that many (seeded by ``dataset.split.seed``), so every
        stage and run that asks for N patients of a split gets the same N, with the split's outcome rate.
        """
        self.setup()
        arrays = self.arrays[split]
        rows = np.arange(len(arrays.patient_ids))
        if max_patients:
            split_cfg = self.dataset_cfg.split
            seed = UNSPLIT_SAMPLE_SEED if is_unsplit(split_cfg) else split_cfg.seed
            rows = stratified_sample(arrays.labels, max_patients, seed)
        filled = locf(arrays.raw)
        names = self.features.static_names
        return [
            PatientRecord(
                patient_id=arrays.patient_ids[row],
                label=int(arrays.labels[row]),
                static=dict(zip(names, arrays.static_raw[row].tolist(), strict=True)),
                times=arrays.time_labels[row],
                values=filled[row, : arrays.lengths[row]],
            )
            for row in rows
        ]

    def patients(
        self, split: str, task_cfg: DictConfig, prompt_cfg: DictConfig, max_patients: int | None = None
    ) -> tuple[list[PatientRecord], list[ChatPrompt]]:
        """``records(split, max_patients)`` and one chat prompt per record, in the same order."""
        records = self.records(split, max_patients)
        prompts = [build_prompt(record, self.features, self.dataset_cfg, task_cfg, prompt_cfg) for record in records]
        return records, prompts

    def prompts(
        self, split: str, task_cfg: DictConfig, prompt_cfg: DictConfig, max_patients: int | None = None
    ) -> list[ChatPrompt]:
        """One chat prompt per patient of ``records(split, max_patients)``."""
        return self.patients(split, task_cfg, prompt_cfg, max_patients)[1]

    def dataloader(self, split: str, shuffle: bool = False) -> DataLoader:
        """Batches of ``split`` (see :class:`EHRTensorDataset` for the keys)."""
        self.setup()
        processes = self.trainer.world_size if self.trainer is not None else 1
        return DataLoader(
            EHRTensorDataset(self.arrays[split]),
            batch_size=max(1, self.batch_size // processes),
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self.dataloader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.dataloader("test")
