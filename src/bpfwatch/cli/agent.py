"""`bpfwatch agent` and `bpfwatch config`: the long-running agent and its config file."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bpfwatch.agent import config


def add_parser(sub: Any) -> None:
    p = sub.add_parser("agent", help="run the host agent (capture, metrics, polling fallback)",
                       description="Run the long-running agent: sensors (or /proc polling when eBPF is not "
                       "available) into rotating capture files, with Prometheus metrics. See docs/agent.md.")
    p.add_argument("-c", "--config", metavar="FILE",
                   help=f"TOML config (default {config.DEFAULT_PATH}; all defaults if that is absent)")
    p.set_defaults(func=run_agent)

    c = sub.add_parser("config", help="print an example config, or check one",
                       description="The agent's TOML configuration (docs/config.md).")
    csub = c.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    ex = csub.add_parser("example", help="print a complete, commented config with every default")
    ex.set_defaults(func=run_example)
    chk = csub.add_parser("check", help="validate a config file: every problem with its key and line")
    chk.add_argument("file", metavar="FILE", help="the agent configuration (TOML) to check")
    chk.set_defaults(func=run_check)


def run_agent(args: argparse.Namespace) -> int:
    from bpfwatch.agent.runner import run_agent as run

    return run(args.config)


def run_example(_args: argparse.Namespace) -> int:
    sys.stdout.write(config.example())
    return 0


def run_check(args: argparse.Namespace) -> int:
    cfg = config.load(args.file)  # ConfigError: every problem, exit 2
    from bpfwatch.agent.runner import wanted_types

    types = wanted_types(cfg)
    for w in config.warnings(cfg):
        sys.stderr.write(f"bpfwatch: warning: {w}\n")
    sys.stdout.write(f"{args.file}: ok ({len(types)} event types; capture "
                     f"{'to ' + cfg.outputs.capture.directory if cfg.outputs.capture.enabled else 'off'}; "
                     f"metrics {'on ' + cfg.metrics.address if cfg.metrics.enabled else 'off'})\n")
    return 0
