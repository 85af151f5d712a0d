"""Risk limits between the strategy and the venue, and the kill switch.

Every new position passes :meth:`RiskGuard.check_open` first: max stake per
trade, max leverage, max trades per day, max open positions, the daily loss
limit and the kill switch (a file whose existence stops all new orders;
closing positions is always allowed). ``mltrade live --kill REASON`` creates the file.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from mltrade.live.logfile import file_only
from mltrade.state import relocate

log = logging.getLogger("mltrade.live")


class RiskViolation(RuntimeError):
    """An order broke a risk limit; ``reason`` names it."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class RiskLimits:
    """Limits; ``None``/0 disables one (except the kill switch)."""

    max_stake: Optional[float] = 5000.0
    max_leverage: Optional[float] = 70.0
    daily_loss_limit: Optional[float] = 1000.0
    max_trades_per_day: Optional[int] = 3
    max_open_positions: Optional[int] = 1
    kill_switch_file: Optional[str] = ".mltrade/live/KILL"   # under $MLTRADE_STATE_DIR

    @classmethod
    def from_config(cls, cfg: dict) -> "RiskLimits":
        """From the ``[live]`` config section (keys ``max_stake``, ``max_leverage``, ...)."""
        def opt(key: str, cast):
            v = cfg.get(key, getattr(cls, key))
            return None if v in (None, 0, "") else cast(v)
        return cls(max_stake=opt("max_stake", float), max_leverage=opt("max_leverage", float),
                   daily_loss_limit=opt("daily_loss_limit", float),
                   max_trades_per_day=opt("max_trades_per_day", int),
                   max_open_positions=opt("max_open_positions", int),
                   kill_switch_file=relocate(cfg.get("kill_switch_file", cls.kill_switch_file) or "") or None)


@dataclass
class RiskGuard:
    """Applies :class:`RiskLimits`; keeps per-day trade counts and realised P&L."""

    limits: RiskLimits = field(default_factory=RiskLimits)
    trades: Dict[date, int] = field(default_factory=dict)
    pnl: Dict[date, float] = field(default_factory=dict)
    refusals: List[Tuple[date, str]] = field(default_factory=list)   #: (day, reason) of each refusal

    def killed(self) -> bool:
        f = self.limits.kill_switch_file
        return bool(f) and Path(f).exists()

    def kill(self, reason: str = "manual") -> Path:
        """Engage the kill switch (atomic write of the kill file)."""
        if not self.limits.kill_switch_file:
            raise ValueError("kill_switch_file: not configured")
        p = Path(self.limits.kill_switch_file)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(f"{datetime.now(timezone.utc).isoformat()} {reason}\n", encoding="utf-8")
        os.replace(tmp, p)
        file_only(logging.WARNING, "kill switch engaged: %s", reason)   # the CLI prints it once
        return p

    def revive(self) -> None:
        if self.limits.kill_switch_file:
            Path(self.limits.kill_switch_file).unlink(missing_ok=True)

    def check_open(self, stake: float, leverage: Optional[float], day: date, open_positions: int = 0,
                   trades_today: Optional[int] = None, pnl_today: Optional[float] = None) -> None:
        """Raise :class:`RiskViolation` if opening a position of ``stake`` breaks a limit.

        Every refusal is also kept in :attr:`refusals` (day, reason) so the caller can show it.
        """
        reason = self._refusal(stake, leverage, day, open_positions, trades_today, pnl_today)
        if reason is not None:
            self.refusals.append((day, reason))
            raise RiskViolation(reason)

    def _refusal(self, stake: float, leverage: Optional[float], day: date, open_positions: int,
                 trades_today: Optional[int], pnl_today: Optional[float]) -> Optional[str]:
        lim = self.limits
        if self.killed():
            return f"kill switch engaged ({lim.kill_switch_file} exists)"
        if lim.max_stake is not None and stake > lim.max_stake + 1e-9:
            return f"stake {stake:.2f} above max_stake {lim.max_stake:.2f}"
        if lim.max_leverage is not None and leverage is not None and leverage > lim.max_leverage + 1e-9:
            return f"leverage {leverage:.1f} above max_leverage {lim.max_leverage:.1f}"
        n = self.trades.get(day, 0) if trades_today is None else trades_today
        if lim.max_trades_per_day is not None and n >= lim.max_trades_per_day:
            return f"max_trades_per_day {lim.max_trades_per_day} reached"
        if lim.max_open_positions is not None and open_positions >= lim.max_open_positions:
            return f"max_open_positions {lim.max_open_positions} reached ({open_positions} open)"
        loss = self.pnl.get(day, 0.0) if pnl_today is None else pnl_today
        if lim.daily_loss_limit is not None and loss <= -lim.daily_loss_limit:
            return f"daily loss {-loss:.2f} reached daily_loss_limit {lim.daily_loss_limit:.2f}"
        return None

    def record_open(self, day: date) -> None:
        self.trades[day] = self.trades.get(day, 0) + 1

    def record_close(self, day: date, pnl: float) -> None:
        self.pnl[day] = self.pnl.get(day, 0.0) + float(pnl)
