"""The README's Cerebro + KnockoutBroker + IndexData example runs as written."""
from __future__ import annotations

import re
from pathlib import Path

import backtrader as bt

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_backtrader_example_runs_as_written(capsys):
    text = README.read_text()
    section = text[text.index("### Any backtrader strategy on certificates"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) <= 11 and "KnockoutBroker(" in code and "IndexData(" in code
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    out = capsys.readouterr().out
    value = float(re.search(r"final value (-?[\d.]+)", out).group(1))
    cerebro = namespace["cerebro"]
    assert isinstance(cerebro.broker.getposition(cerebro.datas[0]), bt.Position)
    assert value > 0 and value != 10_000            # it traded certificates
