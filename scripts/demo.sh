#!/usr/bin/env bash
# The README's first command: sets everything up and runs the main job.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
bash scripts/stack.sh up
say "the local stack is up; custflow is built at $(custflow_bin)"
"$(custflow_bin)" "$@" topics
