"""The ``fetchd`` command: the only place that turns errors into exit codes and messages.

A user sees one line per error on stderr, never a traceback, except for an internal error with
``--debug`` or ``-v -v``.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence

from fetchd.errors import ExitCode, FetchdError
from fetchd.options import Options, parse_args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script and of ``python -m fetchd``."""
    args = list(sys.argv[1:] if argv is None else argv)
    options: Options | None = None
    try:
        options = parse_args(args)
        if options.systemd_unit:  # needs no rc file, and wakes no running daemon
            from fetchd.daemon.systemd_unit import running_program, unit_text

            sys.stdout.write(unit_text(running_program()))
            return 0
        # Imported late: --help must work even if a dependency is broken.
        if options.demo:
            from fetchd.demo.run import run_demo

            code = run_demo(options)
        else:
            from fetchd import app
            from fetchd.memory import fix_mmap_threshold

            fix_mmap_threshold()  # memory stays flat at any message size (fetchd.memory)
            code = int(app.run(options))
        sys.stdout.flush()  # a closed pipe shows here, not as "Exception ignored" at exit
        return code
    except FetchdError as exc:
        print(f"fetchd: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("fetchd: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader is gone (`fetchd --configdump | head`): what is still buffered for stdout
        # goes nowhere, so that Python's flush at exit does not fail again (Python's advice).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return int(ExitCode.UNDEFINED)
    except Exception as exc:  # an internal error: say what and where, not the whole stack
        if options is not None and (options.debug or options.verbose >= 2):
            traceback.print_exc()
        where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        place = f" at {where.filename.rsplit('/', 1)[-1]}:{where.lineno}" if where else ""
        # The exception's text is left out: it may quote anything, a password included.
        print(
            f"fetchd: internal error{place}: {type(exc).__name__} (run with --debug for details)",
            file=sys.stderr,
        )
        return int(ExitCode.UNDEFINED)
