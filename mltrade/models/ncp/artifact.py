"""The saved NCP model: ``model.keras`` and ``ncp.json`` in a registry version directory, and its metrics as text."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Tuple

from mltrade.models.ncp.model import save_model
from mltrade.models.ncp.scoring import describe_constant
from mltrade.models.ncp.settings import NCPSettings
from mltrade.models.registry import write_json_atomic


ARTIFACT = "ncp.json"
MODEL_FILE = "model.keras"


def format_metrics(m: dict) -> str:
    """Validation (selection) figure, degeneracy, and the holdout figures beside the baselines (text)."""
    out = []
    if "validation_objective" in m:
        out.append(f"validation folds {m['selection_range'][0]} .. {m['selection_range'][1]} "
                   f"(selection): {m['objective']} = {m['validation_objective']:.4f} "
                   f"(per fold {', '.join(f'{v:.4f}' for v in m.get('validation_folds', []))})")
    if m.get("pbo"):
        out.append(f"search overfitting (validation folds, {m['pbo'].get('complete_trials', '?')} complete "
                   f"trials): {m['pbo']['words']}")
    if m.get("degenerate"):
        out.append(f"DEGENERATE model: {m.get('degenerate_reason')} -> not kept")
    rows = [("model", m["model"]), ("model + ATR adaptation", m["model_adapted"])]
    rows += [(k, v) for k, v in m["baselines"].items()]
    out += [f"holdout {m['holdout'][0]} .. {m['holdout'][1]} (out-of-sample, scored once, {m['objective']})",
            f"{'':26s} {'log_product':>11s} {'sharpe':>8s} {'trades':>6s} {'hit':>6s} {'dir.acc':>7s}"]
    for name, v in rows:
        out.append(f"{name:26s} {v['log_product']:11.4f} {v['sharpe']:8.3f} {int(v['trades']):6d} "
                   f"{v['hit_rate']:6.3f} {v['direction_accuracy']:7.3f}")
    sig = m.get("significance")
    if sig:
        out.append(f"holdout significance: {sig.get('words', '')}")
    if m.get("ladder"):
        from mltrade.models.ladder import format_ladder
        out.append(format_ladder(m["ladder"]))
    if m.get("holdout_constant"):
        what = describe_constant(m["holdout_direction"], "every holdout session")
        out.append(f"WARNING: the model is constant on the holdout: {what}")
    elif m.get("holdout_constant_adapted"):
        out.append("WARNING: with the ATR adaptation the model is constant on the holdout: "
                   f"{describe_constant(m['holdout_direction_adapted'], 'every holdout session')}")
    return "\n".join(out)


def load_artifact(path: str) -> Tuple[Any, dict]:
    """(model, ncp.json dict) from a registry version directory or a ``.keras`` file (ncp.json beside)."""
    from mltrade.models.ncp.model import load_model
    p = Path(path)
    d = p if p.is_dir() else p.parent
    model_file = p if p.suffix == ".keras" else d / MODEL_FILE
    meta_file = d / ARTIFACT
    if not meta_file.exists():
        raise FileNotFoundError(f"{meta_file}: NCP artifact not found (train one with `mltrade train ncp`)")
    with open(meta_file) as fh:
        try:
            meta = json.load(fh)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{meta_file}: line {exc.lineno}: malformed JSON ({exc.msg})") from exc
    return load_model(str(model_file)), meta


def kept_model_path(s: NCPSettings) -> Optional[str]:
    """Directory of the registry's kept NCP model, or None."""
    p = s.registry().path(s.model_name)
    return str(p) if p else None


def write_artifact(model: Any, meta: dict, directory: str) -> str:
    """Write model.keras and ncp.json into ``directory`` (atomically each); returns the directory."""
    os.makedirs(directory, exist_ok=True)
    save_model(model, os.path.join(directory, MODEL_FILE))
    write_json_atomic(Path(directory) / ARTIFACT, meta)
    return directory
