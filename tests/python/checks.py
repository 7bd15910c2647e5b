"""What every client script of tests/python/ shares: run its checks, one line each."""

import sys
import traceback


def run(checks):
    """Runs each check, printing "ok NAME" or "FAILED NAME" and its traceback; exits non-zero if
    any failed (tests/tests/server.rs counts the "ok" lines against the script's checks)."""
    failed = False
    for check in checks:
        try:
            check()
            print(f"ok {check.__name__}", flush=True)
        except Exception:
            failed = True
            print(f"FAILED {check.__name__}", flush=True)
            traceback.print_exc()
    sys.exit(1 if failed else 0)
