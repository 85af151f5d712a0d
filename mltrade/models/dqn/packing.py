"""A trained DQN agent as one JSON document (its Keras file in base64 and its keras-rl2 config), and back."""
from __future__ import annotations

import base64
import json
import tempfile
from pathlib import Path
from typing import Any


def pack(agent: Any) -> bytes:
    """An agent as one JSON document: its Keras file (base64) and its keras-rl2 config."""
    with tempfile.TemporaryDirectory(prefix="mltrade-dqn-") as d:
        path = Path(d) / "agent.keras"
        agent.save(path)
        doc = {"keras": base64.b64encode(path.read_bytes()).decode("ascii"),
               "config": json.loads(path.with_suffix(".json").read_text())}
    return json.dumps(doc, sort_keys=True).encode()


def unpack(blob: bytes, where: str) -> Any:
    """The agent :func:`pack` wrote (``where``: named in the error when ``blob`` is not one)."""
    from mltrade.models.dqn.agent import DQNAgent

    try:
        doc = json.loads(blob)
        raw = base64.b64decode(doc["keras"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{where}: not a packed DQN agent ({exc})") from exc
    with tempfile.TemporaryDirectory(prefix="mltrade-dqn-") as d:
        path = Path(d) / "agent.keras"
        path.write_bytes(raw)
        path.with_suffix(".json").write_text(json.dumps(doc["config"]))
        return DQNAgent.load(path)
