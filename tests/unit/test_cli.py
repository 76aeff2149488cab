"""cli.py: every command answers --help (summary, usage, environment, an example, exit
status) and --version, and an unknown flag is exit 2 with the usage line; ocb-chain --list
renders as a table for a person and stays the exact document for a pipe."""

from __future__ import annotations

import io
import json
import os
import subprocess

import pytest

from ocb import cli, document
from ocb.stages import chain

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMMANDS = [f"ocb-{verb}" for verb in cli.VERBS] + ["ocb-backup", "ocb-restore"]
SECTIONS = ("Summary:", "Usage:", "Environment", "Example", "Exit status:")


def run(command: str, *args: str) -> subprocess.CompletedProcess:
    path = os.path.join(ROOT, "entrypoint.sh") if command == "entrypoint.sh" else os.path.join(ROOT, "bin", command)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCB_")}
    return subprocess.run([path, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize("verb", cli.VERBS)
def test_stage_docstring_has_every_section(verb: str) -> None:
    doc = __import__(f"ocb.stages.{verb}", fromlist=["__doc__"]).__doc__
    for section in SECTIONS:
        assert section in doc, f"ocb-{verb}'s docstring lacks {section}"


def in_process(monkeypatch, capsys, verb: str, *args: str) -> tuple[int, str, str]:
    """cli.main as bin/ocb-<verb> runs it, in this process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(cli.signal, "signal", lambda *_: None)
    monkeypatch.setattr(cli.sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    for name in [k for k in os.environ if k.startswith("OCB_")]:
        monkeypatch.delenv(name)
    with pytest.raises(SystemExit) as exited:
        cli.main(verb, list(args))
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


@pytest.mark.parametrize("verb", cli.VERBS)
def test_stage_help_version_and_unknown_flag(monkeypatch, capsys, verb: str) -> None:
    code, out, _ = in_process(monkeypatch, capsys, verb, "--help")
    assert code == 0
    for section in SECTIONS + ("--json", "-q", "-v", "OCB_LOG_FORMAT"):
        assert section in out, f"ocb-{verb} --help lacks {section}"
    code, out, _ = in_process(monkeypatch, capsys, verb, "--version")
    assert code == 0 and out.startswith(f"ocb-{verb} ")
    code, out, err = in_process(monkeypatch, capsys, verb, "--no-such-flag")
    assert code == 2 and f"usage: ocb-{verb}" in err and "--no-such-flag" in err
    assert json.loads(out)["error"] == {"stage": verb, "code": 2, "message": json.loads(out)["error"]["message"]}


@pytest.mark.parametrize("command", ["ocb-backup", "ocb-restore", "entrypoint.sh"])
def test_porcelain_help_version_and_unknown_flag(command: str) -> None:
    helped = run(command, "--help")
    assert helped.returncode == 0, helped.stderr
    for section in SECTIONS:
        assert section.rstrip(":").lower() in helped.stdout.lower(), f"{command} --help lacks {section}"
    version = run(command, "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith(command) and "0." in version.stdout
    bogus = run(command, "--no-such-flag")
    assert bogus.returncode == 2, (bogus.stdout, bogus.stderr)
    assert "usage:" in bogus.stderr


LISTED = {"ocb": 1, "kind": "restore", "store": "file:///s", "list": {"snapshots": [
    {"id": "openclaw-backup-20261201-090000", "created_at_utc": "2026-12-01T09:00:00Z", "latest": False,
     "this_machine": False, "backup_type": "full", "files": 12, "bytes": 3 * 1024 * 1024, "sealed": True,
     "chain_length": 1, "chain_id": "openclaw-backup-20261201-090000"},
    {"id": "openclaw-backup-20261201-100000", "created_at_utc": "2026-12-01T10:00:00Z", "latest": True,
     "this_machine": True, "backup_type": "incremental", "files": 13, "bytes": 2048, "sealed": True,
     "chain_length": 2, "chain_id": "openclaw-backup-20261201-090000"},
    {"id": "openclaw-backup-20261130-000000", "created_at_utc": "2026-11-30T00:00:00Z", "latest": False,
     "this_machine": False},  # a store from before catalogs: id and time only
]}, "skip": {"stage": "chain", "reason": "listed 3 snapshots"}}


def test_list_renders_as_a_table() -> None:
    text = chain.render(LISTED)
    assert text is not None
    lines = text.splitlines()
    assert lines[0].split() == ["ID", "TIME", "(UTC)", "TYPE", "FILES", "SIZE", "SEALED", "CHAIN", "LINEAGE"]
    assert "2026-12-01 09:00:00" in lines[1] and "full" in lines[1] and "3.0 MiB" in lines[1] and "yes" in lines[1]
    assert "incremental" in lines[2] and "(latest, this machine)" in lines[2] and "full 20261201-090000" in lines[2]
    assert "?" in lines[3]
    assert "3 snapshots" in lines[-1]


@pytest.mark.parametrize("doc", [{"ocb": 1, "kind": "restore", "chain": {}},
                                 dict(LISTED, error={"stage": "chain", "code": 1, "message": "x"})])
def test_render_leaves_other_documents_to_json(doc: dict) -> None:
    assert chain.render(doc) is None


def test_piped_list_is_exactly_the_document() -> None:
    assert json.loads(document.dump(LISTED)) == LISTED
