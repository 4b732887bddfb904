#!/bin/sh
# Make (or reuse) a virtual environment for fetchd and install it with the given extras.
# Usage: VENV=DIR EXTRAS="[test]" . contrib/venv.sh   (sourced by demo.sh and test.sh)
# POSIX sh passes no arguments to a sourced file, so the caller sets VENV and EXTRAS.
# Debian and Ubuntu ship venv's pip bootstrap in a separate package (python3-venv): install it when
# we may (root with apt-get), otherwise say exactly what is missing.
set -eu
VENV=${VENV:?VENV must name the virtual environment}
EXTRAS=${EXTRAS-}
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
        rm -rf "$VENV"
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            ver=$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
            apt-get update -qq && apt-get install -y -qq python3-venv "python$ver-venv" >/dev/null 2>&1 \
                || apt-get install -y -qq python3-venv >/dev/null
            python3 -m venv "$VENV"
        else
            echo "fetchd: python3 cannot make a virtual environment here;" \
                 "install it with: sudo apt-get install python3-venv" >&2
            exit 1
        fi
    fi
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".$EXTRAS"
