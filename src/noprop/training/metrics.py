"""Per-epoch metrics to ``metrics.csv`` (rewritten atomically) and, if installed, TensorBoard."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from noprop.atomic import atomic_write_text
from noprop.settings import ConfigError


class MetricsLog:
    """Rows of per-epoch metrics; the CSV on disk always holds a whole number of rows."""

    def __init__(self, path: Path | None, *, tensorboard: bool = False) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []
        self._writer = None
        if tensorboard and path is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:
                raise ConfigError(
                    "--tensorboard needs the tensorboard package: pip install 'noprop[tensorboard]'"
                ) from err
            self._writer = SummaryWriter(log_dir=str(path.parent / "tensorboard"))

    @classmethod
    def read(cls, path: Path) -> list[dict[str, Any]]:
        with path.open(newline="") as f:
            return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]

    def restore(self, rows: list[dict[str, Any]]) -> None:
        self.rows = list(rows)

    def log(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if self._writer is not None:
            step = int(row.get("epoch", len(self.rows)))
            for key, value in row.items():
                if isinstance(value, (int, float)) and key != "epoch":
                    self._writer.add_scalar(key, value, step)
            self._writer.flush()
        if self.path is not None:
            atomic_write_text(self.path, self.to_csv())

    def to_csv(self) -> str:
        columns: list[str] = []
        for row in self.rows:
            columns += [k for k in row if k not in columns]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        return out.getvalue()


def _number(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text
