"""``python -m amortval.flows.inbox_once``: curate the inbox once, from a shell or a cron job.

One option per parameter of the ``curate-inbox`` flow (``flows/inbox.py``), named and
defaulted by its signature, so the two cannot drift; ``none`` gives None. The checks that
can fail on user input (rule, threshold, a store with a registered model when there are
new files) run before the flow starts, so a user error is one ``amortval: error:`` line.
The environment (one BLAS thread per fit, no telemetry) is set before Prefect and torch load.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys

from amortval.flows.cli import ENVIRONMENT


def _parse(kind: type):
    return lambda text: None if text.lower() == "none" else kind(text)


def main(argv: list[str] | None = None) -> int:
    for key, value in ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    from amortval.errors import AmortvalError
    from amortval.flows.inbox import curate_inbox
    from amortval.tasks.curate import CurationRule
    from amortval.tasks.inbox import check_inbox_store, inbox_folder, scan_inbox
    from amortval.tasks.resampling import check_resample_after

    parser = argparse.ArgumentParser(prog="python -m amortval.flows.inbox_once", description=__doc__.splitlines()[0])
    parameters = inspect.signature(curate_inbox.fn).parameters
    for name, parameter in parameters.items():
        kind = next((t for t in (float, int) if t.__name__ in str(parameter.annotation).split(" | ")), str)
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=_parse(kind), default=argparse.SUPPRESS,
                            metavar=name.upper(), help=f"(default: {parameter.default})")
    options = vars(parser.parse_args(argv))
    given = {name: options.get(name, parameter.default) for name, parameter in parameters.items()}
    try:
        CurationRule(threshold=given["threshold"], drop_fraction=given["drop_fraction"])
        check_resample_after(given["resample_after_rows"])
        if scan_inbox(inbox_folder(given["inbox"], given["store"]), given["store"]).new:
            check_inbox_store(given["store"])
        summary = curate_inbox(**options)
    except AmortvalError as error:
        print(f"amortval: error: {error}", file=sys.stderr)
        return 2
    print(f"amortval: inbox {summary['inbox']}: {summary['processed']} processed, {summary['rejected']} rejected, "
          f"{summary['skipped']} skipped, {len(summary['resampled'])} re-valued")
    for outcome in summary["files"]:
        detail = (f"kept {outcome['rows_kept']}, dropped {outcome['rows_dropped']} -> {outcome['curated']}"
                  if outcome["status"] == "processed" else f"{outcome['error']} -> {outcome['moved_to']}")
        print(f"  {outcome['status']:9} {outcome['file']}: {detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
