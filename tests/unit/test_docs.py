"""Every command has its help (Summary, Usage, Reads, Writes, Environment, Exit status) and
appears in the README; the exit-code table in the README matches the one in code."""

import importlib
import os
import re
import subprocess

import pytest

from ocb.cli import VERBS
from ocb.errors import EXIT_CODES

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
SECTIONS = ("Summary:", "Usage:", "Reads:", "Writes:", "Environment:", "Exit status:")


@pytest.mark.parametrize("verb", VERBS)
def test_stage_docstring_has_every_section(verb):
    doc = importlib.import_module(f"ocb.stages.{verb}").__doc__
    missing = [s for s in SECTIONS if s not in doc]
    assert not missing, f"ocb-{verb} help lacks {missing}"


@pytest.mark.parametrize("command", [f"ocb-{v}" for v in VERBS] + ["ocb-backup", "ocb-restore"])
def test_command_help_runs_and_readme_mentions_it(command):
    result = subprocess.run([os.path.join(ROOT, "bin", command), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Summary:" in result.stdout and "Usage:" in result.stdout
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        assert f"`{command}" in handle.read()


def test_readme_exit_code_table_matches_code():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        readme = handle.read()
    rows = dict(re.findall(r"^\| (\d+) \| ([^|]+) \|", readme, flags=re.M))
    assert {int(k) for k in rows} == set(EXIT_CODES)
