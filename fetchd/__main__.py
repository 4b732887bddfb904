"""Allow ``python -m fetchd``."""

from fetchd.cli import main

raise SystemExit(main())
