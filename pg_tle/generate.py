#!/usr/bin/env python3
"""Write catbird--<version>.pg_tle.sql, the pg_tle registration script.

    python pg_tle/generate.py [--output PATH]     (or: make pg-tle)

Reads the built extension SQL and control file from python/catbird/sql (run
`make build` first) and renders them with catbird.db.pg_tle, the same code that
`catbird db install --mode pg-tle-script` uses. Load the result on a server
with pg_tle as a member of pgtle_admin, then run CREATE EXTENSION catbird.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run from a checkout without requiring the package to be installed.
sys.path.insert(0, str(ROOT / "python"))

from catbird.db.pg_tle import PgTleError, parse_control, render_from_control  # noqa: E402

NAME = "catbird"
BUILT_DIR = ROOT / "python" / "catbird" / "sql"


def generate(output: Path | None = None) -> Path:
    control = (BUILT_DIR / f"{NAME}.control").read_text(encoding="utf-8")
    version = parse_control(control).get("default_version", "")
    built = BUILT_DIR / f"{NAME}--{version}.sql"
    if not built.exists():
        raise PgTleError(f"{built.relative_to(ROOT)} does not exist: run 'make build'")
    script = render_from_control(control, built.read_text(encoding="utf-8"), name=NAME)
    target = output or ROOT / "pg_tle" / f"{NAME}--{version}.pg_tle.sql"
    target.write_text(script, encoding="utf-8")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--output", type=Path, help="where to write the script")
    args = parser.parse_args(argv)
    try:
        target = generate(args.output)
    except PgTleError as exc:
        print(f"pg_tle/generate.py: {exc}", file=sys.stderr)
        return 1
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
