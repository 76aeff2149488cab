"""Run one stage: `python lib/ocb_stage.py <verb> [flags]` (what bin/ocb-<verb> execs).

A script beside the package, so that `lib/` (this file's directory) is on sys.path and `ocb`
imports from this checkout whether or not it is installed.
"""
import sys

from ocb.launch import main

main(sys.argv.pop(1))
