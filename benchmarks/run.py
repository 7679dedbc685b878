"""Run the workbench benchmarks: ``python benchmarks/run.py --out DIR [--quick] [--device auto]``.

Same as ``workbench benchmark ...`` (the measurement code lives in :mod:`workbench.benchmark`);
see ``benchmarks/README.md`` for what is measured and the reference numbers.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
    from workbench.cli.main import main

    sys.exit(main(["benchmark", *sys.argv[1:]]))
