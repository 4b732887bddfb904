#!/usr/bin/env python3
"""Many random rc files, each read by the real fetchmail and by fetchd: the long run, outside CI.

    .venv-test/bin/python contrib/rc-differential.py [--start N] [--count N] [--jobs N]

As root, fetchmail runs as $FETCHD_TEST_USER (default fmtest), as in the test suite. Prints
every seed whose file fetchd reads differently (reproduce one with ``--start SEED --count 1``,
and see the file with ``python -c 'from tests.support.rcgen import generate; print(generate(N))'``),
then the count of seeds run and of disagreements; exits 1 if there were any.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import pwd
import shutil
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.rcdiff import disagreement


def _user() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    return pwd.getpwnam(os.environ.get("FETCHD_TEST_USER", "fmtest"))


def _run(seeds: range) -> list[tuple[int, str]]:
    fetchmail = shutil.which("fetchmail")
    if fetchmail is None:
        raise SystemExit("the real fetchmail is not installed")
    user = _user()
    found = []
    home = Path(tempfile.mkdtemp(prefix="fetchd-rcdiff-"))
    try:
        home.chmod(0o755)
        for seed in seeds:
            with contextlib.redirect_stderr(io.StringIO()):  # fetchd's "Logfile ... ignoring"
                differs = disagreement(seed, fetchmail, home, user)
            if differs is not None:
                found.append((seed, differs))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args()
    end = args.start + args.count
    step = max(1, -(-args.count // (args.jobs * 8)))
    chunks = [range(s, min(s + step, end)) for s in range(args.start, end, step)]
    found: list[tuple[int, str]] = []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for part in pool.map(_run, chunks):
            for seed, differs in part:
                print(f"seed {seed}: {differs}", flush=True)
            found.extend(part)
    print(f"{args.count} seeds ({args.start}..{end - 1}) run, {len(found)} disagreements")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
