"""``python -m minicompress.labs export OUTDIR [--source book/labs]``."""

from __future__ import annotations

import argparse
import sys

from minicompress.labs import export


def main(argv: list[str] | None = None) -> int:
    """Export the labs: OUTDIR/source (for nbgrader), OUTDIR/student and OUTDIR/instructor."""
    parser = argparse.ArgumentParser(prog="python -m minicompress.labs", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_export = sub.add_parser(
        "export", help="write OUTDIR/source/<lab>/, OUTDIR/student and OUTDIR/instructor"
    )
    p_export.add_argument("outdir")
    p_export.add_argument("--source", default="book/labs", help="folder of lab notebooks")
    args = parser.parse_args(argv)
    try:
        for path in export(args.source, args.outdir):
            print(path)
    except (FileNotFoundError, ValueError) as err:
        print(err, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
