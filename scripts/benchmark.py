"""CPU speed comparisons: `python scripts/benchmark.py [--quick] [--data_dir DIR] [--output benchmark_results.json]`."""

import _script_path  # noqa: F401, I001 - first: keeps scripts/ (and its evaluate.py) off sys.path
import logging
import sys

from transformers import HfArgumentParser

from hf_mri.benchmark import BenchmarkArguments, format_report, run_benchmark

logger = logging.getLogger("hf_mri")


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print its markdown report to stdout and return the results."""
    (args,) = HfArgumentParser(BenchmarkArguments).parse_args_into_dataclasses(args=argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logger.setLevel(logging.INFO)
    results = run_benchmark(args)
    sys.stdout.write(format_report(results) + "\n")
    return results


if __name__ == "__main__":
    main()
