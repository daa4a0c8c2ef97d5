"""The benchmark's table: step times side by side, speed ratios, TFLOP/s and MFU.

FLOPs are XLA's cost analysis of the JAX float32 train step (forward, backward and update),
counted once per case and used for every runner of it: the same model does the same work in
either framework. MFU divides achieved FLOP/s by the device's dense peak for the compute
dtype (bf16 tensor cores for bfloat16 runs and autocast; TF32 for float32 runs, which is what
XLA and cuDNN use for float32 convolutions and matmuls on Hopper by default).
"""

from __future__ import annotations

# Dense (no sparsity) peak TFLOP/s by device kind: (bf16, tf32). NVIDIA data sheets, SXM.
PEAKS = {
    "H200": (989.4, 494.7),
    "H100": (989.4, 494.7),
    "A100": (312.0, 156.0),
}


def peak_tflops(device_kind: str, override: float | None = None) -> dict | None:
    if override:
        return {"bfloat16": override, "float32": override}
    for name, (bf16, tf32) in PEAKS.items():
        if name.lower() in device_kind.lower():
            return {"bfloat16": bf16, "float32": tf32}
    return None


COLUMNS = (
    ("jax_float32", "JAX fp32"),
    ("jax_bfloat16", "JAX bf16"),
    ("torch_eager", "PT eager"),
    ("torch_channels_last", "PT ch-last"),
    ("torch_bf16_autocast", "PT bf16 autocast"),
    ("torch_compile", "PT compile"),
)


def _ms(row: dict, key: str) -> float | None:
    run = row.get("runs", {}).get(key)
    return run["step_s_median"] * 1e3 if run else None


def _best(row: dict, prefix: str) -> tuple[str, float] | None:
    found = [(k, _ms(row, k)) for k, _ in COLUMNS if k.startswith(prefix) and _ms(row, k)]
    return min(found, key=lambda kv: kv[1]) if found else None


def derived(row: dict, machine: dict) -> dict:
    """Ratios and throughput of a row: PyTorch best / JAX best, examples/s, TFLOP/s, MFU."""
    out = {}
    jax_best, torch_best = _best(row, "jax_"), _best(row, "torch_")
    if jax_best:
        key, ms = jax_best
        out["jax_best"] = key
        out["examples_per_s"] = row["batch_size"] / (ms / 1e3)
        if row.get("tokens_per_step"):
            out["tokens_per_s"] = row["tokens_per_step"] / (ms / 1e3)
        if row.get("flops_per_step"):
            tflops = row["flops_per_step"] / (ms / 1e3) / 1e12
            out["tflops_per_s"] = tflops
            peaks = machine.get("peak_tflops")
            if peaks:
                dtype = "bfloat16" if key.endswith("bfloat16") else "float32"
                out["mfu"] = tflops / peaks[dtype] / max(1, row.get("num_devices", 1))
    if jax_best and torch_best:
        out["torch_best"] = torch_best[0]
        out["torch_over_jax"] = torch_best[1] / jax_best[1]
        eager = _ms(row, "torch_eager")
        if eager:
            out["eager_over_jax"] = eager / jax_best[1]
        compiled = _ms(row, "torch_compile")
        if compiled:
            out["compile_over_jax"] = compiled / jax_best[1]
    pipeline, device_resident = _ms(row, "jax_float32_pipeline"), _ms(row, "jax_float32")
    if pipeline and device_resident:
        out["pipeline_ratio"] = pipeline / device_resident
    return out


def _count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 100_000 else f"{n:,}"


def _fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def row_line(row: dict, machine: dict) -> str:
    if "error" in row:
        return f"{row['name']}: FAILED {row['error']} ({row.get('wall_s')} s)"
    d = derived(row, machine)
    times = ", ".join(f"{label} {_ms(row, k):.1f} ms" for k, label in COLUMNS if _ms(row, k))
    return (
        f"{row['name']}: {times}; PyTorch/JAX {_fmt(d.get('torch_over_jax'), '.2f')}; "
        f"{row['wall_s']} s"
    )


def markdown(result: dict) -> str:
    machine, rows = result["machine"], result["rows"]
    present = [(k, label) for k, label in COLUMNS if any(_ms(r, k) for r in rows)]
    header = [
        "model",
        "params",
        "batch",
        *[f"{label} (ms)" for _, label in present],
        "PyTorch best / JAX best",
        "JAX compile (s)",
        "examples/s",
        "TFLOP/s",
        "MFU",
        "memory JAX / PT (MiB)",
        "pipeline / resident",
    ]
    lines = [
        f"Suite `{result['suite']}` on {machine['num_devices']}x {machine['device']} "
        f"({machine['backend']}, {machine['host_cpus']} host CPUs), jax {machine['jax']}, "
        f"torch {machine.get('torch', '-')} ({machine.get('torch_threads', '-')} threads), "
        f"{machine['date']}. Median train step; ratio > 1 means JAX is faster.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in rows:
        if "skipped" in row:
            lines.append(f"| {row['name']} | skipped ({row['skipped']}) |")
            continue
        if "error" in row:
            lines.append(f"| {row['name']} | failed: {row['error']} |")
            continue
        d = derived(row, machine)
        compile_s = row.get("jax_compile_s", {}).get("float32")
        memory = [row.get("jax_peak_bytes"), row.get("torch_peak_bytes")]
        memory = " / ".join(_fmt(m and m / 2**20, ".1f") for m in memory)
        cells = [
            row["name"],
            _count(row["num_params"]),
            str(row["batch_size"]),
            *[_fmt(_ms(row, k), ".1f") for k, _ in present],
            _fmt(d.get("torch_over_jax"), ".2f"),
            _fmt(compile_s, ".1f"),
            _fmt(d.get("examples_per_s"), ".0f")
            + (f" ({d['tokens_per_s']:.0f} tokens/s)" if d.get("tokens_per_s") else ""),
            _fmt(d.get("tflops_per_s"), ".3g"),
            _fmt(d.get("mfu") and 100 * d["mfu"], ".1f", "n/a") + ("%" if d.get("mfu") else ""),
            memory,
            _fmt(d.get("pipeline_ratio"), ".2f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def side_by_side(before: dict, after: dict) -> str:
    """Two runs of a suite row by row: JAX step, PyTorch's best, and their ratio in each."""
    header = "| model | JAX before (ms) | JAX after (ms) | JAX speed-up | PyTorch best (ms) "
    header += "| PyTorch / JAX before | PyTorch / JAX after |"
    lines = [header, "|---|---|---|---|---|---|---|"]
    previous = {r["name"]: r for r in before["rows"]}
    for row in after["rows"]:
        old = previous.get(row["name"])
        if old is None or "runs" not in row or "runs" not in old:
            continue
        d_old, d_new = derived(old, before["machine"]), derived(row, after["machine"])
        jax_old, jax_new = _ms(old, d_old["jax_best"]), _ms(row, d_new["jax_best"])
        torch_best = _ms(row, d_new["torch_best"]) if d_new.get("torch_best") else None
        cells = [
            row["name"],
            f"{jax_old:.0f}",
            f"{jax_new:.0f}",
            f"{jax_old / jax_new:.2f}x",
            _fmt(torch_best, ".0f"),
            _fmt(d_old.get("torch_over_jax"), ".2f"),
            _fmt(d_new.get("torch_over_jax"), ".2f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    # python -m dllab_jax.bench.report BEFORE/bench.json AFTER/bench.json
    import json
    import sys
    from pathlib import Path

    first, second = (json.loads(Path(p).read_text()) for p in sys.argv[1:3])
    print(side_by_side(first, second), end="")
