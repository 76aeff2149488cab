# shellcheck shell=sh
# Sourced by bin/ocb-<verb> (the Python stages): start the stage on the project's venv when one
# exists, else on python3 from PATH (dependencies installed system-wide), with one interpreter
# start. A `#!/usr/bin/env python3` launcher that re-executed itself into the venv started two,
# and the first one was whatever `python3` PATH gave: a pyenv shim is a bash script that costs
# more than the stage's own start (docs/performance.md). Six stages start per backup.
# ocb_stage BIN VERB [FLAGS...]: BIN is the bin/ dir (resolved through symlinks).
ocb_stage() {
    ocb_python=$1/../.venv/bin/python
    [ -x "$ocb_python" ] || ocb_python=python3
    ocb_main=$1/../lib/ocb_stage.py
    shift
    exec "$ocb_python" "$ocb_main" "$@"
}
