#!/usr/bin/env python3
"""Write catbird--<version>.pg_tle.sql, the pg_tle registration script.

    python pg_tle/generate.py [--output PATH]     (or: make pg-tle)

Without --output it also writes catbird--<from>--<version>.pg_tle.sql, the
pg_tle update path from each earlier version (pgtle.install_update_path).

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

from catbird.db.pg_tle import (  # noqa: E402
    PgTleError,
    parse_control,
    render_from_control,
    render_update_path,
    update_path_header,
)

NAME = "catbird"
BUILT_DIR = ROOT / "python" / "catbird" / "sql"


def generate_update_paths(directory: Path | None = None) -> list[Path]:
    """Write catbird--<from>--<to>.pg_tle.sql for every update script into this
    version (run after the version's own registration script)."""
    control = (BUILT_DIR / f"{NAME}.control").read_text(encoding="utf-8")
    version = parse_control(control).get("default_version", "")
    written = []
    for built in sorted(BUILT_DIR.glob(f"{NAME}--*--{version}.sql")):
        old = built.name[len(NAME) + 2 : -len(f"--{version}.sql")]
        script = render_update_path(
            NAME,
            old,
            version,
            built.read_text(encoding="utf-8"),
            header=update_path_header(NAME, old, version),
        )
        target = (directory or ROOT / "pg_tle") / f"{NAME}--{old}--{version}.pg_tle.sql"
        target.write_text(script, encoding="utf-8")
        written.append(target)
    return written


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
    if args.output is None:
        for path in generate_update_paths():
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
