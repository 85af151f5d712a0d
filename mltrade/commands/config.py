"""``mltrade config show`` (the effective configuration and the file each value came from) and
``mltrade config new FILE`` (a commented starter file)."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def register(sub) -> None:
    from mltrade.cli import subcommand_group

    group = subcommand_group(sub, "config", "show the effective configuration or write a starter file")
    s = group.add_parser("show", help="print the effective configuration, each value with the file it came from",
                         description="Print every section and key of the configuration a command would use "
                                     "(the defaults of mltrade/default_config.toml and mltrade/config.d/*.toml, "
                                     "then --config FILE), each value followed by the file that set it.")
    s.add_argument("--config", help="TOML config file (as given to the other commands)")
    s.add_argument("--section", help="only this section (e.g. backtest, product, strategy.params, sweep)")
    s.set_defaults(func=_show)
    n = group.add_parser("new", help="write a commented starter config file",
                         description="Write FILE with every section and key of the defaults, each key commented "
                                     "out with its default value and its explanation: uncomment what you change. "
                                     "Refuses to overwrite an existing file.")
    n.add_argument("file", help="the TOML file to write")
    n.add_argument("--section", action="append",
                   help="only these sections (repeatable; default: backtest, broker, product, strategy)")
    n.set_defaults(func=_new)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)


def _show(args) -> int:
    from mltrade.config import PACKAGE_DIR, load_config
    from mltrade.config_sources import sources

    cfg = load_config(args.config, check=False)   # show every value, then say which one fails its check
    srcs = sources(args.config)
    sections = {}

    def walk(table, prefix):
        for k, v in table.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}.{k}" if prefix else k)
            else:
                sections.setdefault(prefix, []).append((k, v))

    walk(cfg, "")
    if args.section and args.section not in sections:
        raise ValueError(f"--section: no section [{args.section}]; valid: {', '.join(sorted(sections))}")
    here = str(Path.cwd())
    for name, items in sections.items():
        if args.section and name != args.section:
            continue
        print(f"[{name}]")
        width = max(len(f"{k} = {_toml_value(v)}") for k, v in items)
        for k, v in items:
            src = srcs.get((name, k), "defaults")
            if src.startswith(str(PACKAGE_DIR)):
                src = "default: mltrade/" + src[len(str(PACKAGE_DIR)) + 1:]
            src = src.replace(here + "/", "")
            print(f"{f'{k} = {_toml_value(v)}':<{width}}  # {src}")
        print()
    from mltrade.config_sources import check_values
    check_values(cfg, srcs)       # a bad value: printed above, then named by the error line
    return 0


#: sections a starter file carries unless --section is given
STARTER_SECTIONS = ("backtest", "broker", "product", "strategy")


def starter_text(sections=STARTER_SECTIONS) -> str:
    """The defaults' TOML with every key commented out (explanations kept), for the given top-level sections."""
    from mltrade.config import CONFIG_D, DEFAULT_FILE

    files = [DEFAULT_FILE] + sorted(CONFIG_D.glob("*.toml"))
    out = ["# mltrade configuration (written by `mltrade config new`). Every key below is commented out and",
           "# shows its default; uncomment and change what you need, then pass this file with --config.",
           "# `mltrade config show --config THIS_FILE` prints the effective values and where each comes from.", ""]
    keep = False
    for f in files:
        for line in f.read_text().splitlines():
            m = re.match(r"^\[([^\]]+)\]\s*$", line)
            if m:
                keep = m.group(1).split(".")[0] in sections
                if keep:
                    out += ["", line]
                continue
            if not keep:
                continue
            if re.match(r"^[A-Za-z_][\w-]*\s*=", line):
                out.append(f"# {line}")
            elif line.strip():
                out.append(line if line.lstrip().startswith("#") else f"# {line}")
    return "\n".join(out).strip() + "\n"


def _new(args) -> int:
    from mltrade.config import default_config, load_config
    from mltrade.io import atomic_write_text

    path = Path(args.file)
    if path.exists():
        raise ValueError(f"{path}: already exists; pick another name or remove it first")
    valid = sorted(default_config())
    sections = tuple(args.section or STARTER_SECTIONS)
    bad = [s for s in sections if s not in valid]
    if bad:
        raise ValueError(f"--section: no section {', '.join(bad)}; valid: {', '.join(valid)}")
    atomic_write_text(path, starter_text(sections))
    load_config(path)   # the starter must load as it is
    print(f"wrote {path} (sections {', '.join(sections)}; every key commented out)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(1)
