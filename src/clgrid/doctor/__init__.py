"""``clgrid doctor``: a self-check of clgrid's training path on one device, in a few minutes, before a big study.

Run it on a new GPU node, after a torch / CUDA / driver upgrade, or before submitting hundreds of jobs. Every check
goes through the same job functions the Snakemake rules call (``clgrid.jobs``, via ``clgrid.inprocess.run_cell``),
on a tiny continual-learning problem built in code (scikit-learn's bundled 8x8 digits in 2 tasks of 5 classes,
1 epoch each; no download) and validated with the workflow's schema:

- **methods**: every registered method, under each precision (default: the device's own, bf16 on a recent GPU, and
  fp32) and each data placement (inputs on the device, or in host memory streamed by a DataLoader). Each run must
  finish, give finite accuracies, and its final average accuracy (ACC, class-IL) must lie within ``tolerance``
  points of the same method's fp32 run with data on the device (the reference row).
- **feature cache**: a frozen backbone (``freeze: all``) trained on the cached features of ``extract_features``
  against the same run through the backbone: final accuracies within ``CACHE_TOLERANCE`` points per task.
- **resume**: with ``train.deterministic: true``, a task interrupted right after an in-job checkpoint and resumed
  must save the same state as the uninterrupted task, every tensor bit for bit.
- **throughput**: ResNet-18 (CIFAR stem) at 32 px through clgrid's training loop, in images/s, under fp32, bf16,
  bf16 + channels_last and bf16 + torch.compile, with the FLOPs of a training step counted by
  ``FlopCounterMode``, the achieved TFLOP/s and their fraction of the GPU's dense bf16 peak.

It prints one Markdown table (a row per check: ok / FAIL / skip, its numbers, the first line of the error) and
exits 1 if any check failed. Without CUDA, ``--device cuda`` (the default) says so in one line and exits 0;
``--device cpu`` runs the same suite on the CPU (how the tests check the doctor itself).

Checks run in fresh processes (one per group; ``--no-isolate`` runs them in this one): process-wide settings
(deterministic kernels, cuBLAS workspace, cuDNN autotuning) are then set as in a real job, and a CUDA error that
poisons its process (a device-side assert) costs only the rest of its group, which is restarted without the
method that broke it.
"""

from clgrid.doctor.checks import compare_states
from clgrid.doctor.command import add_arguments, main, run
from clgrid.doctor.runner import judge_against_reference, run_checks
from clgrid.doctor.suite import CACHE_TOLERANCE, TOLERANCE, Options, Row

__all__ = ["CACHE_TOLERANCE", "TOLERANCE", "Options", "Row", "add_arguments", "compare_states",
           "judge_against_reference", "main", "run", "run_checks"]
