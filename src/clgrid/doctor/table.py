"""The doctor's Markdown table: a row per check with its numbers, under the environment and what each check means."""

from __future__ import annotations

from typing import Any

from clgrid.doctor.suite import BENCH, CACHE_TOLERANCE, N_TASKS, RESUME_EPOCHS, SEED, TRAIN, Options, Row


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def fmt_list(values) -> str:
    return "[" + ", ".join(fmt(v) for v in values) + "]"


def numbers_text(row: Row) -> str:
    n = row.numbers
    if row.check == "method" and "acc" in n:
        vs = n.get("vs_reference")
        bound = f" of ±{n['bound']:.0f}" if "bound" in n else ""
        vs = vs if isinstance(vs, str) else f"Δ {vs:+.1f}{bound}" if vs is not None else "Δ n/a"
        if "acc_seed1" in n:
            vs += f"; seed 1: {fmt(n['acc_seed1'])}, bound ±{n.get('bound', 0):.0f}"
        if "vs_placement" in n:
            vs += f"; {n['vs_placement']}"
        return (f"ACC {fmt(n['acc'])} ({vs}); last task {fmt(n['last_task'])}; task-IL {fmt(n['acc_task_il'])}; "
                f"{row.seconds:.1f} s")
    if row.check == "cache" and "acc_cached" in n:
        return (f"ACC uncached {fmt(n['acc_uncached'])}, cached {fmt(n['acc_cached'])}; max task Δ "
                f"{fmt(n['max_task_diff'], 2)}; max weight Δ {n['max_weight_diff']:.1e}")
    if row.check == "resume" and "interrupted_at" in n:
        return f"interrupted at {n['interrupted_at']}; {n['tensors_compared']} tensors compared"
    if row.check == "throughput":
        if "note" in n:
            return n["note"]
        if "gflop_per_image" in n:
            peak = n["peak_bf16_tflops"]
            return f"{n['gflop_per_image']:.2f} GFLOP per image (fwd+bwd); bf16 peak {fmt(peak, 0)} TFLOP/s" \
                   + ("" if peak else " (unknown GPU or CPU: no fraction)")
        if "images_per_s" in n:
            frac = n.get("fraction_of_bf16_peak")
            rate = n["images_per_s"]
            rate_text = f"{rate:,.0f}" if rate >= 100 else f"{rate:.1f}"
            return (f"{rate_text} images/s; {fmt(n.get('tflops'), 2)} TFLOP/s; "
                    f"{'n/a' if frac is None else f'{100 * frac:.1f} %'} of bf16 peak")
    return ", ".join(f"{k} {fmt(v)}" for k, v in n.items())


def environment(device: str) -> dict[str, Any]:
    import platform

    import torch

    env = {"device": device, "torch": torch.__version__, "python": platform.python_version(),
           "cpu_threads": torch.get_num_threads()}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        env.update(gpu=torch.cuda.get_device_name(torch.device(device)), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version(), capability=f"{props.major}.{props.minor}",
                   gpu_memory_gib=round(props.total_memory / 2**30, 1))
    return env


def format_table(rows: list[Row], opts: Options, env: dict[str, Any], wall_s: float) -> str:
    failed = sum(r.status == "FAIL" for r in rows)
    what = env.get("gpu") or "CPU"
    head = [
        f"## clgrid doctor: {what} ({env['device']}), torch {env['torch']}"
        + (f", CUDA {env['cuda']}, cuDNN {env['cudnn']}" if env.get("cuda") else ""),
        "",
        f"{len(rows)} checks, {failed} failed, {sum(r.status == 'skip' for r in rows)} skipped, "
        f"{wall_s:.0f} s. Precisions {', '.join(opts.precisions)}; placements {', '.join(opts.placements)}.",
        "",
        f"- **method**: {BENCH} (scikit-learn's 8x8 digits, 5 classes per task) in {N_TASKS} tasks x 1 epoch "
        f"(batch {TRAIN['batch_size']}), seed {SEED}, through the train jobs; CNN with BatchNorm, LoRA on an MLP, "
        "ZSCL on a tiny random CLIP. ACC = final average class-IL accuracy (%); Δ = ACC minus the same method's fp32 "
        f"run with data on the {opts.placements[0]} (the reference row, also trained with seed 1). FAIL beyond the "
        f"bound: ±{opts.tolerance:g} points, or twice what the seed alone moved the reference if more (dml's k-NN "
        "retention swings by ~20). It catches a broken path (no learning, NaN, skipped steps, wrong dtypes), not "
        "small biases. A host row must also match the device row (bit for bit on the CPU) and leave no DataLoader "
        "worker running. ZSCL's random CLIP barely learns in one epoch: its row checks that the path runs.",
        f"- **cache**: frozen CNN (freeze: all) on the extract_features cache vs through the backbone; FAIL if a "
        f"task's final accuracy differs by more than {CACHE_TOLERANCE:g} point.",
        f"- **resume**: train.deterministic: true; task 1 ({RESUME_EPOCHS} epochs) interrupted right after an in-job "
        "checkpoint mid epoch 2, resumed; FAIL unless every saved tensor equals the uninterrupted task's bit for bit.",
        "- **throughput**: ResNet-18 (CIFAR stem) at 32 px, random data on the device, naive method through "
        "clgrid's training loop; FLOPs counted with FlopCounterMode; fraction of the GPU's dense bf16 peak.",
        "",
        "| check | setting | status | numbers | first error line |",
        "|---|---|---|---|---|",
    ]
    body = [f"| {r.check} | {r.setting} | {'**FAIL**' if r.status == 'FAIL' else r.status} | "
            f"{numbers_text(r)} | {r.error.replace('|', '/')} |" for r in rows]
    return "\n".join(head + body) + "\n"
