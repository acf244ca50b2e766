"""What a job receives, typed: small frozen objects whose JSON form is, byte for byte, the dict the rules pass.

The rules pass a job its spec as JSON (``config.run_spec`` and friends, dumped with sorted keys); the config hash
of every result is the hash of that JSON. These classes parse it (``from_json``) and give it back (``to_json``)
unchanged: an absent optional key stays absent, and a key no field knows is refused rather than dropped, so a
spec cannot lose a setting on its way into a job. The settings blocks that are open-ended (a benchmark's or a
backbone's config, the training settings, a method's parameters, the analysis settings) stay mappings, read as the
config wrote them. Pure Python: the Snakefile and the CLI import this without torch.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Mapping, TypeVar

from clgrid.io import config_hash

S = TypeVar("S", bound="_Spec")


class _Spec:
    """``from_json`` / ``to_json`` for a frozen dataclass whose fields are the JSON keys; None fields are absent."""

    @classmethod
    def from_json(cls: type[S], data: Mapping[str, Any]) -> S:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{cls.__name__} has no field for key(s) {unknown}: add it to clgrid.spec so the job "
                             f"reads it and the spec's JSON (and its config hash) keeps it")
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}  # type: ignore
        missing = sorted(required - set(data))
        if missing:
            raise ValueError(f"{cls.__name__} needs key(s) {missing}; got {sorted(data)}")
        return cls(**data)

    @classmethod
    def of(cls: type[S], spec: "S | Mapping[str, Any]") -> S:
        """``spec`` itself, or the object its JSON dict describes (library callers may pass either)."""
        return spec if isinstance(spec, cls) else cls.from_json(spec)  # type: ignore[arg-type]

    def to_json(self) -> dict[str, Any]:
        """The dict the rules pass, key for key (absent optional keys stay absent)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)  # type: ignore[arg-type]
                if getattr(self, f.name) is not None}

    def json_text(self) -> str:
        """The exact ``--spec`` argument the rules write."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))

    @property
    def config_hash(self) -> str:
        return config_hash(self.to_json())


@dataclass(frozen=True)
class DatasetSpec(_Spec):
    """A prepared dataset: its registered name and preparation options (import file, image size, ...)."""

    dataset: str
    options: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class ScenarioSpec(_Spec):
    """A benchmark's task split: its name and config without the training settings."""

    benchmark: str
    benchmark_cfg: Mapping[str, Any]


@dataclass(frozen=True)
class RunSpec(_Spec):
    """One job of a (benchmark, backbone, seed), and for a run its method: init, evaluation, training, analysis.

    An init spec (initial weights, their evaluation, the feature cache) has no method; ``train`` then holds only
    the benchmark's precision settings, when it sets any. An analysis spec adds ``analysis``.
    """

    benchmark: str
    benchmark_cfg: Mapping[str, Any]
    backbone: str
    backbone_cfg: Mapping[str, Any]
    seed: int
    device: str
    train: Mapping[str, Any] | None = None
    method: str | None = None  # the run name: a registered method or a variant
    method_name: str | None = None  # the registered method it runs
    method_params: Mapping[str, Any] | None = None
    feature_cache: bool | None = None
    analysis: Mapping[str, Any] | None = None
    init_from: Mapping[str, Any] | None = None  # the run checkpoint the initial weights come from (config.init_source)
    # "validation": every evaluation of the job is on the tasks' validation splits and the test arrays are never
    # read (a selection candidate, clgrid.config.selection); absent: the test sets (and the validation splits
    # beside them when the benchmark sets some aside).
    evaluate_on: str | None = None
    # A run of a selection study (clgrid.config.selection): a candidate's {role: candidate, base, protocol, values,
    # tasks} or a final run's {role: final, base, protocol, file}: the file holds the chosen values the job reads.
    selection: Mapping[str, Any] | None = None

    @property
    def train_settings(self) -> Mapping[str, Any]:
        return self.train or {}

    @property
    def params(self) -> Mapping[str, Any]:
        return self.method_params or {}

    @property
    def reference_dataset(self) -> str | None:
        """The dataset a method draws reference images from (ZSCL), or None."""
        return self.params.get("reference_dataset")

    @property
    def run_id(self) -> str:
        return f"{self.benchmark}/{self.backbone}/{self.method}/s{self.seed}"

    def identity(self) -> dict[str, Any]:
        """The keys that name a run in every per-run result file."""
        return {"run": self.run_id, "benchmark": self.benchmark, "backbone": self.backbone, "method": self.method,
                "seed": self.seed}
