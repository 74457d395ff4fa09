"""``edgewise bench score|latency|cdc|pipeline|eos``: each prints its figures side by side."""

from __future__ import annotations

import argparse

from edgewise.app.core.settings import Settings


def bench_command(settings: Settings, what: str, args: argparse.Namespace) -> int:
    """Entry point of ``edgewise bench``."""
    if what == "score":
        from edgewise.app.bench.score import bench_score, print_score

        print_score(bench_score(settings, args.samples))
        return 0
    if what == "pipeline":
        from edgewise.app.bench.pipeline import bench_pipeline, print_pipeline

        print_pipeline(bench_pipeline(settings, args.samples))
        return 0
    if what == "eos":
        from edgewise.app.bench.eos import bench_eos, print_eos

        print_eos(bench_eos(settings, args.samples))
        return 0
    if what == "cdc":
        from edgewise.app.bench.cdc import ROWS, bench_cdc, print_cdc

        rows = args.samples or ROWS
        print_cdc(bench_cdc(settings, rows), rows, settings.cdc_partitions)
        return 0
    from edgewise.app.bench.latency import bench_latency, print_latency

    print_latency(bench_latency(settings, args.rate, args.seconds), args.rate)
    return 0
