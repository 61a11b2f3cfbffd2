"""Named run configurations shipped with the package: the paper's experiments, one YAML file each.

The files live in ``noprop/configs/<name>.yaml`` (``mnist-dt``, ``cifar-10-ct``, ...). Each holds::

    description: one line
    paper:                      # or null where the paper has no number
      test_accuracy:            # v1 Table 1, % (mean, standard error), per class embedding
        onehot: {mean: 99.47, stderr: 0.05}
        learned: {mean: 99.49, stderr: 0.04, embedding_dim: 20}
      source: where the numbers come from
    config:                     # RunConfig fields (v1 Table 3)
      method: dt
      ...

``noprop train --config NAME`` and ``noprop reproduce NAME`` start from ``config`` and apply the
flags given on the command line. A path to a YAML file works wherever a name does; the file may
also be a flat mapping of RunConfig fields, such as the ``config.yaml`` every run directory holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from noprop.config import ConfigError, RunConfig

#: The paper's twelve experiments (Table 1 rows x columns, one-hot embedding: the backprop
#: baseline, then NoProp-DT, -CT, -FM), in table order.
PAPER_EXPERIMENTS: tuple[str, ...] = tuple(
    f"{dataset}-{method}" for method in ("backprop", "dt", "ct", "fm")
    for dataset in ("mnist", "cifar-10", "cifar-100")
)
SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class PaperNumber:
    """A published test accuracy (%) and the class embedding it was measured with."""

    mean: float
    stderr: float
    embedding: str
    embedding_dim: int | None = None  # only for learned embeddings (the paper's dim=20)

    def __str__(self) -> str:
        return f"{self.mean:.2f} ± {self.stderr:.2f}"


@dataclass(frozen=True)
class Preset:
    """One named experiment: the RunConfig fields to start from and the paper's result for it."""

    name: str
    description: str
    fields: dict[str, Any]
    paper: dict[str, PaperNumber] = field(default_factory=dict)
    source: str | None = None

    @property
    def method(self) -> str:
        return str(self.fields.get("method", RunConfig.method))

    @property
    def dataset(self) -> str:
        return str(self.fields.get("dataset", RunConfig.dataset))

    def run_config(self, overrides: dict[str, Any] | None = None) -> RunConfig:
        """This preset's configuration with ``overrides`` (e.g. command-line flags) on top."""
        return RunConfig.from_dict({**self.fields, **(overrides or {})})

    def paper_number(self, config: RunConfig) -> PaperNumber | None:
        """The published number comparable with ``config``, or ``None`` if the run left the paper's
        setting (another method or dataset, or an embedding variant the paper did not report)."""
        if config.method != self.method or config.dataset != self.dataset:
            return None
        settings = config.method_config.to_dict()
        number = self.paper.get(settings.get("embedding", "onehot"))
        if number is None:
            return None
        if number.embedding_dim is not None and settings.get("embedding_dim") != number.embedding_dim:
            return None
        return number


def preset_names() -> list[str]:
    """Names of the shipped configurations, sorted."""
    folder = resources.files("noprop") / "configs"
    return sorted(p.name.rsplit(".", 1)[0] for p in folder.iterdir() if p.name.endswith(SUFFIXES))


def load_preset(name_or_path: str | Path) -> Preset:
    """A shipped configuration by name, or a YAML file by path; errors are one line."""
    text_name = str(name_or_path)
    path = Path(text_name)
    if path.suffix in SUFFIXES or "/" in text_name:
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return _parse(path.stem, path.read_text(), str(path))
    if text_name not in preset_names():
        raise ConfigError(
            f"unknown config {text_name!r}; choose one of {', '.join(preset_names())} "
            "or give a path to a YAML file"
        )
    text = (resources.files("noprop") / "configs" / f"{text_name}.yaml").read_text()
    return _parse(text_name, text, f"config {text_name}")


def _parse(name: str, text: str, where: str) -> Preset:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{where} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must hold a mapping of configuration fields")
    if "config" not in data:  # a flat mapping of RunConfig fields, e.g. a run's config.yaml
        data = {"config": data}
    unknown = sorted(set(data) - {"description", "paper", "config"})
    if unknown:
        raise ConfigError(f"{where}: unknown top-level key(s) {', '.join(unknown)}")
    fields_ = data["config"] or {}
    if not isinstance(fields_, dict):
        raise ConfigError(f"{where}: `config` must be a mapping of configuration fields")
    try:
        RunConfig.from_dict(fields_)
    except (ConfigError, TypeError) as err:
        raise ConfigError(f"{where}: {err}") from None
    paper = data.get("paper") or {}
    return Preset(
        name=name,
        description=str(data.get("description", "")),
        fields=dict(fields_),
        paper=_paper_numbers(paper.get("test_accuracy") or {}, where),
        source=paper.get("source"),
    )


def _paper_numbers(table: dict[str, Any], where: str) -> dict[str, PaperNumber]:
    numbers = {}
    for embedding, entry in table.items():
        try:
            numbers[embedding] = PaperNumber(
                mean=float(entry["mean"]),
                stderr=float(entry["stderr"]),
                embedding=embedding,
                embedding_dim=entry.get("embedding_dim"),
            )
        except (KeyError, TypeError, ValueError):
            raise ConfigError(
                f"{where}: paper.test_accuracy.{embedding} needs numbers mean and stderr"
            ) from None
    return numbers
