"""Peak memory of a whole analysis of Django's source (offline reviewer), in its own process.

    python benchmarks/analysis_memory.py [--root PATH]

Prints the analysis's summary, its wall time and the child process's peak resident memory.
Target: under 500 MB.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import django

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import ROOT, child_environment, scratch_database


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(Path(django.__file__).parent))
    args = parser.parse_args()
    with scratch_database() as url:
        env = child_environment(url)
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--verbosity", "0"],
            cwd=ROOT,
            env=env,
            check=True,
        )
        began = time.monotonic()
        output = subprocess.run(
            [sys.executable, "manage.py", "analyze", args.root, "--provider", "static", "--json"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        elapsed = time.monotonic() - began
        # The largest resident set of any child process so far (KiB on Linux).
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    report = json.loads(output)
    print(f"analysis of {args.root}")
    print(
        f"  {report['functions_total']} functions, {report['cards']} cards, "
        f"status {report['status']}"
    )
    print(
        f"  {elapsed:.1f} s wall time, peak resident memory {peak_mb:.0f} MB "
        "of the largest child process (target < 500 MB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
