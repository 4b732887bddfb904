#!/bin/sh
# The README's first command: install fetchd in its own virtual environment and run `fetchd --demo`.
set -eu
cd "$(dirname "$0")/.."
VENV=.venv-demo EXTRAS=""
. contrib/venv.sh
exec .venv-demo/bin/fetchd --demo "$@"
