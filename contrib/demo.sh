#!/bin/sh
# The README's first command: install fetchd in its own virtual environment and run `fetchd --demo`.
set -eu
cd "$(dirname "$0")/.."
. contrib/venv.sh .venv-demo ""
exec .venv-demo/bin/fetchd --demo "$@"
