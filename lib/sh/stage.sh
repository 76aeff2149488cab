# Sourced by bin/ocb-<verb> (the Python stages): start the stage on the project's venv when one
# exists, else on python3 from PATH (dependencies installed system-wide), with one interpreter
# start. A `#!/usr/bin/env python3` launcher that re-executed itself into the venv started two,
# and the first one was whatever `python3` PATH gave: a pyenv shim is a bash script that costs
# more than the stage's own start (docs/performance.md). Six stages start per backup.
#   $ocb_bin: the bin/ dir (resolved through symlinks); $1: the verb; the rest: its flags.
ocb_stage() {
    ocb_python=$ocb_bin/../.venv/bin/python
    [ -x "$ocb_python" ] || ocb_python=python3
    exec "$ocb_python" "$ocb_bin/../lib/ocb_stage.py" "$@"
}
