"""`python -m dllab_jax.bench --suite=offline|faithful|quick [--out=DIR]`.

Times every case of the suite (dllab_jax/bench/cases.py) on the default device, in one
process, JAX and PyTorch interleaved: the JAX train step in float32 and bfloat16 compute,
PyTorch eager in float32 and channels_last (bf16 autocast on a GPU) and `torch.compile`.
Parameter counts are checked equal first. Writes `<out>/bench.json` (every figure, and the
machine) and `<out>/bench.md` (the table); prints the table.

Other flags: --only=substring[,substring] (rows whose name contains one), --dtypes,
--torch=eager,channels_last,compile (or none), --rounds/--steps-per-round/--warmup,
--peak-tflops (the device's peak, for MFU where the device is not known).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import jax

from dllab_jax import performance
from dllab_jax.bench import cases as cases_lib
from dllab_jax.bench import report, timing
from dllab_jax.errors import UserError


def _parse(argv):
    parser = argparse.ArgumentParser(prog="python -m dllab_jax.bench", description=__doc__)
    parser.add_argument("--suite", choices=sorted(cases_lib.SUITES), default="offline")
    parser.add_argument("--quick", action="store_true", help="same as --suite=quick")
    parser.add_argument("--out", default=None, help="default: benchmarks/results/<suite>")
    parser.add_argument("--only", default="", help="comma-separated substrings of row names")
    parser.add_argument(
        "--dtypes", default=None, help="JAX compute dtypes (default float32,bfloat16)"
    )
    parser.add_argument("--torch", default="eager,channels_last,compile")
    parser.add_argument("--pipeline", choices=("auto", "off"), default="auto")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps-per-round", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument(
        "--budget-s", type=float, default=None, help="skip the cases left after this many s"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.suite = "quick"
    return args


def _torch_variants(requested: str) -> list[str]:
    if requested in ("", "none"):
        return []
    try:
        import torch
    except ImportError:
        print("PyTorch is not installed: timing JAX only (pip install -e '.[convert]')")
        return []
    from dllab_jax.bench import torch_side

    variants = [v for v in requested.split(",") if v]
    unknown = sorted(set(variants) - set(torch_side.VARIANTS))
    if unknown:
        raise UserError(f"--torch has unknown variants {unknown}; use {torch_side.VARIANTS}")
    if torch.cuda.is_available() and "bf16_autocast" not in variants and "eager" in variants:
        variants.insert(variants.index("eager") + 1, "bf16_autocast")
    if not torch.cuda.is_available():
        variants = [v for v in variants if v != "bf16_autocast"]
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    return variants


def run_forward_case(case: cases_lib.Case, args, dtypes, variants) -> dict:
    """An inference case (two-tower forward, caption decoding): JAX per dtype against
    transformers' PyTorch model."""
    from dllab_jax.bench import inference

    row: dict = {"name": case.name, "config": case.config, "batch_size": case.batch_size}
    decode = case.kind == "caption_decode"
    jax_class = inference.JaxCaptionDecode if decode else inference.JaxTwoTowerForward
    torch_class = inference.TorchCaptionGenerate if decode else inference.TorchTwoTowerForward
    runners, jax_steps = {}, {}
    for dtype in dtypes:
        step = jax_class(case.model_size, case.batch_size, case.text_len, dtype)
        jax_steps[dtype] = runners[f"jax_{dtype}"] = step
        step()
    first = next(iter(jax_steps.values()))
    row.update(
        num_params=first.num_params,
        num_devices=1,
        flops_per_step=first.flops,
        jax_compile_s={d: round(s.compile_s, 3) for d, s in jax_steps.items()},
    )
    torch_steps = {}
    # channels_last: no 4-D activations to speak of; compile: `generate` is a Python loop.
    skip = ("channels_last", "compile") if decode else ("channels_last",)
    for variant in [v for v in variants if v not in skip]:
        step = torch_class(case.model_size, case.batch_size, case.text_len, variant)
        if step.num_params != first.num_params:
            raise UserError(
                f"{case.name}: transformers' BLIP has {step.num_params:,} parameters here, "
                f"ours {first.num_params:,}"
            )
        torch_steps[variant] = runners[f"torch_{variant}"] = step
    if torch_steps:
        row["torch_compile_s"] = {v: round(s.compile_s, 3) for v, s in torch_steps.items()}
        row["torch_peak_bytes"] = max(s.peak_memory() or 0 for s in torch_steps.values()) or None
    times = timing.time_interleaved(
        runners, warmup=args.warmup, rounds=args.rounds, steps_per_round=args.steps_per_round
    )
    row["runs"] = {name: timing.summarize(t) for name, t in times.items()}
    if decode:
        row["tokens_per_step"] = first.tokens_per_step
    return row


def run_case(case: cases_lib.Case, args, dtypes, variants, workdir: Path) -> dict:
    if case.kind in ("two_tower_forward", "caption_decode"):
        return run_forward_case(case, args, dtypes, variants)
    row: dict = {"name": case.name, "config": case.config, "batch_size": case.batch_size}
    runners, jax_steps, torch_steps = {}, {}, {}
    for dtype in dtypes:
        step = timing.JaxTrainStep(case.make_config(dtype), workdir / f"{dtype}")
        jax_steps[dtype] = runners[f"jax_{dtype}"] = step
        step()
        row.setdefault("jax_peak_bytes", step.peak_memory())
    first = next(iter(jax_steps.values()))
    row.update(
        num_params=first.num_params,
        num_devices=first.num_devices,
        flops_per_step=first.flops * first.num_devices if first.flops else None,
        jax_init_s={d: round(s.init_s, 3) for d, s in jax_steps.items()},
        jax_compile_s={d: round(s.compile_s, 3) for d, s in jax_steps.items()},
    )
    if variants:
        from dllab_jax.bench import torch_side

        spec = first.exp.task.model_spec()
        for variant in variants:
            step = torch_side.TorchTrainStep(
                spec["name"],
                spec["kwargs"],
                first.config.task,
                first.host_batch,
                variant,
                expected_params=first.num_params,
            )
            torch_steps[variant] = runners[f"torch_{variant}"] = step
        row["torch_compile_s"] = {v: round(s.compile_s, 3) for v, s in torch_steps.items()}
        row["torch_peak_bytes"] = (
            max((s.peak_memory() or 0 for s in torch_steps.values()), default=0) or None
        )
    if case.pipeline and args.pipeline == "auto":
        runners["jax_float32_pipeline"] = jax_steps[dtypes[0]].fed_by_pipeline()
    times = timing.time_interleaved(
        runners, warmup=args.warmup, rounds=args.rounds, steps_per_round=args.steps_per_round
    )
    row["runs"] = {name: timing.summarize(t) for name, t in times.items()}
    row["jax_final_loss"] = {d: s.last_loss() for d, s in jax_steps.items()}
    return row


def main(argv=None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    performance.configure_xla()  # before the first device is touched (XLA reads flags once)
    backend = jax.default_backend()
    dtypes = (args.dtypes or "float32,bfloat16").split(",")
    variants = _torch_variants(args.torch)
    out = Path(args.out or f"benchmarks/results/{args.suite}")
    only = [s for s in args.only.split(",") if s]
    selected = [
        c for c in cases_lib.SUITES[args.suite] if not only or any(s in c.name for s in only)
    ]
    if not selected:
        raise UserError(f"--only={args.only} matches no case of suite {args.suite!r}")
    device = jax.devices()[0]
    machine = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "backend": backend,
        "device": device.device_kind,
        "num_devices": jax.device_count(),
        "host_cpus": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "reference_ops": performance.use_reference_ops(),
        "peak_tflops": report.peak_tflops(device.device_kind, args.peak_tflops),
    }
    try:
        import torch

        machine["torch"] = torch.__version__
        machine["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    print(f"suite {args.suite} on {machine['num_devices']}x {machine['device']} ({backend})")
    rows = []
    with tempfile.TemporaryDirectory(prefix="dllab_bench_") as tmp:
        suite_start = time.perf_counter()
        for index, case in enumerate(selected):
            start = time.perf_counter()
            if args.budget_s is not None and start - suite_start > args.budget_s:
                rows.append({"name": case.name, "config": case.config, "skipped": "budget"})
                print(f"{case.name}: skipped (over --budget-s={args.budget_s:g})")
                continue
            try:
                row = run_case(case, args, dtypes, variants, Path(tmp) / str(index))
            except UserError:
                raise
            except Exception as error:  # one broken case must not lose the others' figures
                traceback.print_exc()
                row = {"name": case.name, "config": case.config, "error": repr(error)}
            row["wall_s"] = round(time.perf_counter() - start, 1)
            rows.append(row)
            print(report.row_line(row, machine))
            jax.clear_caches()
    result = {"suite": args.suite, "machine": machine, "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(result, indent=1) + "\n")
    table = report.markdown(result)
    (out / "bench.md").write_text(table)
    print(table)
    print(f"wrote {out / 'bench.json'} and {out / 'bench.md'}")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
