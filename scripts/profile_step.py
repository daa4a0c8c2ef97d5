"""Per-op profile of one config's JAX train step on this machine (where the time goes).

    python scripts/profile_step.py configs/classification.py [--batch=128] [--steps=5] [--out=F]

Traces a few steps with `jax.profiler`, then sums the duration of every XLA op (thunk) by
name and by kind (convolution, fusion, reduce, ...) from the trace's own events, printing the
top ones with their share of the step. Used for the README's "Performance" section.
"""

from __future__ import annotations

import argparse
import collections
import glob
import re
import tempfile
from pathlib import Path

from dllab_jax import performance


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", default=None, help="also write the report to this file")
    args = parser.parse_args()
    performance.configure_xla()
    import jax

    from dllab_jax.bench import cases, timing

    spec = args.config
    base = cases.Case(spec, spec, args.batch or 0)
    if args.batch is None:
        from dllab_jax import config_utils

        base = cases.Case(spec, spec, config_utils.load_config(spec).batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        step = timing.JaxTrainStep(base.make_config(), Path(tmp) / "run")
        for _ in range(3):
            step()
        trace_dir = Path(tmp) / "trace"
        jax.profiler.start_trace(str(trace_dir))
        for _ in range(args.steps):
            step()
        jax.profiler.stop_trace()
        (path,) = glob.glob(str(trace_dir / "**" / "*.xplane.pb"), recursive=True)
        profile = jax.profiler.ProfileData.from_file(path)
    by_name, by_kind = collections.Counter(), collections.Counter()
    for plane in profile.planes:
        for line in plane.lines:
            for event in line.events:
                name = event.name
                stats = dict(event.stats)
                if "hlo_op" not in stats and "hlo_module" not in stats:
                    continue
                op = stats.get("hlo_op", name)
                by_name[op] += event.duration_ns
                kind = re.sub(r"[._]\d+$", "", op).split(".")[0]
                by_kind[kind] += event.duration_ns
    total = sum(by_name.values())
    lines = [
        f"{args.config} batch {base.batch_size}, jax {jax.__version__} on "
        f"{jax.devices()[0].device_kind}: {total / args.steps / 1e6:.1f} ms of XLA ops per step"
    ]
    for title, counter in (("by kind", by_kind), ("by op", by_name)):
        lines.append(f"-- {title}")
        for name, ns in counter.most_common(args.top):
            lines.append(f"{100 * ns / total:5.1f}%  {ns / args.steps / 1e6:7.2f} ms  {name}")
    print("\n".join(lines))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
