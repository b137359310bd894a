"""faceattr benchmarks: `python scripts/bench.py [--quick] [--json PATH] [--markdown BENCHMARKS.md]` (see --help).

Input pipeline vs the seed article's, Lightning vs a raw loop, eager vs TorchScript vs ONNX Runtime, `bentoml serve`
under concurrent load vs in-process, and peak memory; every figure a median of repetitions, every ratio against a
baseline of the same run. The code is in benchmarks/.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
