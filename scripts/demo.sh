#!/usr/bin/env bash
# The README's first command: installs what is missing, starts the local stack, builds,
# and runs `custflow demo` (extra arguments go to it, e.g. --fresh or --rate 50).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
bash scripts/stack.sh up
say "starting the demo (Ctrl-C stops it cleanly; run again to continue, --fresh to start over)"
exec "$(custflow_bin)" demo "$@"
