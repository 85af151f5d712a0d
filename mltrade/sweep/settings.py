"""What a sweep needs besides the loaded configuration: ``[sweep]`` settings, validated."""
from __future__ import annotations

from pathlib import Path

from mltrade.optuna_storage import normalise_url
from mltrade.settings import section


@section("sweep", own=("strategy", "progress"))
class SweepSettings:
    """Everything a sweep needs besides the loaded configuration (defaults: ``config.d/sweep.toml``)."""

    strategy: str = "momentum"    #: the strategy swept (the command takes ``[strategy] name``)
    trials: int
    jobs: int
    storage: str                  #: Optuna RDB URL; "" = SQLite file in the output folder
    study: str                    #: study name; "" = "<strategy>-<start>-<end>"
    engine: str                   #: vector | broker
    start: str                    #: "" = the command takes ``[backtest] start``
    end: str
    folds: int
    test_frac: float
    batch: int
    top: int
    seed: int
    out: str
    progress: bool = True         #: a progress bar on the terminal

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
