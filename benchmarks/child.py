"""One measurement in a fresh process: ``python -m benchmarks.child CASE URL PARAMS_JSON``.

Prints the case's figures as one JSON object on the last line of stdout.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys

#: Case name → module with ``run(url, params) -> dict[str, float]``.
CASES = {
    "raw": "benchmarks.case_raw",
    "dramatiq": "benchmarks.case_dramatiq",
    "pipeline": "benchmarks.case_pipeline",
    "publish_many": "benchmarks.case_pipeline",
    "routing": "benchmarks.case_routing",
    "latency": "benchmarks.latency",
}


def main(argv: list[str]) -> None:
    case, url, raw_params = argv
    logging.basicConfig(level=logging.WARNING)
    module = importlib.import_module(CASES[case])
    params = json.loads(raw_params)
    figures = module.run(url, params) if case != "publish_many" else module.run_publish_many(url, params)
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
