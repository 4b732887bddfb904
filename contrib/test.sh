#!/bin/sh
# The README's second command: install fetchd with its test dependencies in their own virtual
# environment and run the whole test suite. Extra arguments go to pytest.
set -eu
cd "$(dirname "$0")/.."
VENV=.venv-test EXTRAS="[test]"
. contrib/venv.sh
exec .venv-test/bin/python -m pytest "$@"
