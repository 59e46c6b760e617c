"""What the interop clients share: printing a check, failing on the first wrong one, and a
`main` that turns the SDK's nested exception groups into readable FAIL lines."""

import asyncio
import sys
import time


class CheckFailed(Exception):
    """A check saw something other than what the server behind the proxy answers."""


def check(name, started, ok, detail=""):
    """Prints PASS/FAIL with the time since `started` (time.monotonic()); raises on FAIL."""
    elapsed = (time.monotonic() - started) * 1000
    print(f"{'PASS' if ok else 'FAIL'} {name} ({elapsed:.0f} ms){': ' + detail if detail else ''}",
          flush=True)
    if not ok:
        raise CheckFailed(name)


def leaves(error):
    """The innermost exceptions of a (possibly nested) ExceptionGroup, the ones that say why."""
    if isinstance(getattr(error, "exceptions", None), (list, tuple)):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


def main(run, usage):
    """Runs `run(URL)` from the command line within 60 s; returns the process exit code."""
    if len(sys.argv) != 2:
        print(usage, file=sys.stderr)
        return 2
    try:
        asyncio.run(asyncio.wait_for(run(sys.argv[1]), timeout=60))
    except CheckFailed:
        return 1
    except BaseException as e:  # the SDK raises ExceptionGroups from its task groups
        for leaf in leaves(e):
            print(f"FAIL {type(leaf).__name__}: {leaf}", flush=True)
        return 1
    return 0
