"""Typed settings: one source of defaults (the shipped TOML), every key a field, user values typed."""
from dataclasses import fields

import pytest

from mltrade.config import ConfigError, default_config, load_config
from mltrade.models.ncp.settings import NCPSettings
from mltrade.settings import SECTION_CLASSES, Settings, section, settings_of, shipped_section
from mltrade.sweep.settings import SweepSettings


def _classes():
    return list(SECTION_CLASSES.values()) + [NCPSettings, SweepSettings]


@pytest.mark.parametrize("cls", _classes(), ids=lambda c: c.__name__)
def test_every_shipped_key_is_a_field_with_the_shipped_default(cls):
    table = shipped_section(cls.section_name)
    made = cls()
    names = {f.name for f in fields(cls)}
    assert set(table) <= names
    assert names - set(table) == set(cls.own_fields)      # nothing else has a default of its own
    for key, value in table.items():
        assert getattr(made, key) == value, key


def test_a_default_written_in_code_beside_the_toml_is_refused():
    with pytest.raises(TypeError, match=r"Bad.cash has a default in code; its default is \[backtest\] cash"):
        @section("backtest")
        class Bad:
            cash: float = 5.0
    with pytest.raises(TypeError, match=r"\[broker\] fractional has no field in Bad"):
        @section("broker")
        class Bad:   # noqa: F811
            commission_fixed: float
            commission_pct: float
    with pytest.raises(TypeError, match=r"Bad.extra is neither in \[broker\] nor declared own="):
        @section("broker")
        class Bad:   # noqa: F811
            commission_fixed: float
            commission_pct: float
            fractional: bool
            extra: int = 3


def test_the_loaded_config_becomes_typed_sections(tmp_path):
    path = tmp_path / "user.toml"
    path.write_text('[backtest]\ncash = 2500\n[live.notify]\nmax_per_minute = 3\n[product]\nkind = "minifuture"\n')
    s = settings_of(load_config(path))
    assert isinstance(s, Settings)
    assert s.backtest.cash == 2500 and s.backtest.exchange == default_config()["backtest"]["exchange"]
    assert s.notify.max_per_minute == 3 and s.notify.webhook_env == "MLTRADE_WEBHOOK_URL"
    assert s.product.kind == "minifuture" and s.product.to_dict()["ratio"] == 0.01
    assert settings_of(s) is s


def test_an_unknown_key_in_a_hand_built_table_names_the_section():
    cfg = default_config()
    cfg["broker"]["comission_fixed"] = 1.0
    with pytest.raises(ConfigError, match=r"\[broker\]: unknown key 'comission_fixed'; valid keys: commission_fixed"):
        settings_of(cfg)
