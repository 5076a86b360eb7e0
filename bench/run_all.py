"""Run every benchmark in bench/ in turn; each prints its own table (ratios against the
reference implementation measured in the same run; absolute times only mean something on a GPU).

    python bench/run_all.py            # or: make bench
"""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["models.py", "speed.py", "peft_memory.py", "collators.py", "corpus.py", "squad_preprocess.py"]


def main() -> int:
    failed = []
    for name in BENCHMARKS:
        print(f"\n=== bench/{name}", flush=True)
        if subprocess.run([sys.executable, str(HERE / name)]).returncode != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
