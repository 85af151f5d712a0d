"""What a sweep needs besides the loaded configuration: ``[sweep]`` settings, validated."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mltrade.optuna_storage import normalise_url


@dataclass
class SweepSettings:
    """Everything a sweep needs besides the loaded configuration."""

    strategy: str = "momentum"
    trials: int = 1000
    jobs: int = 1
    storage: str = ""             #: Optuna RDB URL; "" = SQLite file in the output folder
    study: str = ""               #: study name; "" = "<strategy>-<start>-<end>"
    engine: str = "vector"        #: vector | broker
    start: str = "2014-01-01"     #: the backtest's default range ([sweep] start = "" takes [backtest] start)
    end: str = "2018-12-31"
    folds: int = 3
    test_frac: float = 0.25
    batch: int = 100
    top: int = 3
    seed: int = 42
    out: str = "reports/sweeps"
    progress: bool = True

    def study_name(self) -> str:
        """The study's name in the storage."""
        return self.study or f"{self.strategy}-{self.start}-{self.end}"

    def out_dir(self) -> Path:
        """Folder of this study's outputs."""
        return Path(self.out) / self.study_name()

    def storage_url(self) -> str:
        """The Optuna RDB URL (SQLite file in the output folder by default)."""
        if self.storage:
            return normalise_url(self.storage)
        path = self.out_dir() / "study.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path.resolve()}"

    def check(self) -> None:
        """Raise ``ValueError`` naming the first invalid setting."""
        if self.engine not in ("vector", "broker"):
            raise ValueError(f"engine: expected 'vector' or 'broker', got {self.engine!r}")
        for name in ("trials", "jobs", "folds", "batch", "top"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: expected a positive integer, got {getattr(self, name)!r}")
        if not 0 < self.test_frac < 1:
            raise ValueError(f"test_frac: expected a fraction in (0, 1), got {self.test_frac!r}")
