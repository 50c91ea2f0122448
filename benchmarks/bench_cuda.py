"""CUDA check and speed: the front end, DiffRes and the merging extractor on a GPU against the CPU.

Needs torch, numpy and safetensors (runs on a bare GPU machine with ``PYTHONPATH=.``; see
``gpu_session.sh``). It checks that every stage, the shipped default compressor included, gives
the CPU's numbers on CUDA (float32 tolerances written below), then times each side in its own
block after a warm-up (medians) and prints the ratios.

    PYTHONPATH=. python benchmarks/bench_cuda.py [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from adares.diffres import DiffRes
from adares.frontend import MelFrontend
from adares.precision import exact_float32
from adares.registry import resolve_extractor


def timed(fn, *, repeats: int, warmup: int = 2, cuda: bool) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def feature_differences(on_cpu, on_gpu) -> dict:
    """Largest differences between two extractions of one clip (None where the frame counts differ)."""
    same_shape = on_cpu.spans.shape == on_gpu.spans.shape
    return {
        "scores_max_abs_err": float(np.abs(on_cpu.scores - on_gpu.scores).max()),
        "spans_max_diff_samples": int(np.abs(on_cpu.spans - on_gpu.spans).max()) if same_shape else None,
        "mel_max_abs_err": float(np.abs(on_cpu.mel - on_gpu.mel).max()) if same_shape else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--device", default="cuda", help="device to compare with the CPU (cpu: a dry run)")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 0
    cuda = torch.device(args.device)
    on_gpu = cuda.type == "cuda"
    name = torch.cuda.get_device_name(0) if on_gpu else "cpu (dry run)"
    report: dict = {"device": name, "torch": torch.__version__, "checks": {}, "timings": {}}
    rng = np.random.default_rng(0)
    # structure for the estimator to react to: a chirp, a click train every 0.3 s, a little noise
    t = np.arange(60 * 16000) / 16000
    minute = 0.3 * np.sin(2 * np.pi * (200 + 30 * t) * t) * (np.sin(2 * np.pi * 0.7 * t) > 0)
    minute[::4800] += 0.9
    minute = (minute + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
    batch = torch.from_numpy((0.1 * rng.standard_normal((64, 16000))).astype(np.float32))

    # 1. front end parity and speed (power: rtol 1e-4 of the max, as the librosa parity test)
    cpu_frontend, gpu_frontend = MelFrontend(), MelFrontend().to(cuda)
    wave = torch.from_numpy(minute)
    cpu_power, _ = cpu_frontend.power(wave)
    gpu_power, _ = gpu_frontend.power(wave.to(cuda))
    report["checks"]["frontend_power_rel_err"] = relative_error(gpu_power, cpu_power)
    for name, x in (("frontend 60 s", wave), ("frontend 64 x 1 s", batch)):
        cpu_s = timed(lambda x=x: cpu_frontend(x), repeats=7, cuda=False)
        x_gpu = x.to(cuda)
        gpu_s = timed(lambda x_gpu=x_gpu: gpu_frontend(x_gpu), repeats=20, cuda=on_gpu)
        report["timings"][name] = {"cpu_s": cpu_s, "cuda_s": gpu_s, "cuda_speedup": cpu_s / gpu_s}

    # 2. DiffRes: forward parity, forward+backward speed at T = 12,000, one hour forward
    torch.manual_seed(0)
    module = DiffRes(128, reduction=0.5)
    log_mel = torch.log(cpu_power[:, :12000] + 1e-6)
    # Fresh batch-norm statistics leave most ReLUs inactive in evaluation mode and the scores
    # constant, which would make the comparison a uniform merge: calibrate them on the input first.
    with torch.no_grad():
        for _ in range(30):  # batch-norm momentum 0.1: 30 passes bring the statistics within 5%
            module(log_mel[:, :4000])
    module.eval()
    cpu_out = module(log_mel)
    gpu_module = DiffRes(128, reduction=0.5).to(cuda).eval()
    gpu_module.load_state_dict(module.state_dict())
    with exact_float32(cuda):  # as extraction runs it; PyTorch's default lets cuDNN use TF32
        gpu_out = gpu_module(log_mel.to(cuda))
    report["checks"]["diffres_feature_rel_err"] = relative_error(gpu_out.feature, cpu_out.feature)
    report["checks"]["diffres_scores_rel_err"] = relative_error(gpu_out.scores, cpu_out.scores)
    # for the record, not checked: what PyTorch's default (TF32 convolutions) gives
    report["checks"]["diffres_scores_rel_err_torch_default"] = relative_error(
        gpu_module(log_mel.to(cuda)).scores, cpu_out.scores
    )
    report["checks"]["diffres_scores_std"] = float(cpu_out.scores.detach().std())  # > 0: the scores are not uniform

    def step(m, x):
        out = m(x)
        out.feature.sum().backward()

    train_cpu, train_gpu = DiffRes(128).train(), DiffRes(128).to(cuda).train()
    x_cpu, x_gpu = log_mel.clone().requires_grad_(False), log_mel.to(cuda)
    cpu_s = timed(lambda: step(train_cpu, x_cpu), repeats=3, warmup=1, cuda=False)
    gpu_s = timed(lambda: step(train_gpu, x_gpu), repeats=10, cuda=on_gpu)
    report["timings"]["diffres fwd+bwd T=12000"] = {"cpu_s": cpu_s, "cuda_s": gpu_s, "cuda_speedup": cpu_s / gpu_s}

    hour = torch.randn(1, 720_000, 128, device=cuda) - 5.0
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        gpu_s = timed(lambda: gpu_module(hour), repeats=1 if not on_gpu else 3, warmup=1 if on_gpu else 0, cuda=on_gpu)
    report["timings"]["diffres forward 1 h (T=720000)"] = {
        "cuda_s": gpu_s,
        "peak_gpu_gb": torch.cuda.max_memory_allocated() / 1e9 if on_gpu else None,
    }
    hour = None  # free the GPU memory before the next check

    # 3. the merging extractor (flux) on CUDA equals the CPU
    clip = minute[: 10 * 16000]
    flux = feature_differences(
        resolve_extractor("flux", frontend=MelFrontend(), reduction=0.75)(clip),
        resolve_extractor("flux", frontend=MelFrontend(), reduction=0.75, device=args.device)(clip),
    )
    report["checks"]["extract_flux_mel_max_abs_err"] = flux["mel_max_abs_err"]
    report["checks"]["extract_flux_spans_max_diff_samples"] = flux["spans_max_diff_samples"]

    # 4. the shipped default compressor (what `adares extract --device cuda` runs) on CUDA equals the CPU
    cpu_default = resolve_extractor("default", frontend=MelFrontend(), reduction=0.5)
    gpu_default = resolve_extractor("default", frontend=MelFrontend(), reduction=0.5, device=args.device)
    default = feature_differences(cpu_default(clip), gpu_default(clip))
    report["checks"] |= {f"extract_default_{key}": value for key, value in default.items()}
    for name, audio in (("extract default 60 s", minute), ("extract default 1 s", minute[:16000])):
        cpu_s = timed(lambda audio=audio: cpu_default(audio), repeats=7, cuda=False)
        gpu_s = timed(lambda audio=audio: gpu_default(audio), repeats=20, cuda=on_gpu)
        report["timings"][name] = {"cpu_s": cpu_s, "cuda_s": gpu_s, "cuda_speedup": cpu_s / gpu_s}
    clips = [minute[i * 16000 : (i + 1) * 16000] for i in range(16)]
    metas = [None] * len(clips)
    cpu_s = timed(lambda: cpu_default.batch(clips, metas=metas), repeats=7, cuda=False)
    gpu_s = timed(lambda: gpu_default.batch(clips, metas=metas), repeats=20, cuda=on_gpu)
    report["timings"]["extract default batch 16 x 1 s"] = {
        "cpu_s": cpu_s,
        "cuda_s": gpu_s,
        "cuda_speedup": cpu_s / gpu_s,
    }

    limits = {
        "frontend_power_rel_err": 1e-4,
        "diffres_feature_rel_err": 1e-3,
        "diffres_scores_rel_err": 1e-3,
        "extract_flux_mel_max_abs_err": 1e-2,
        "extract_default_scores_max_abs_err": 1e-3,
        "extract_default_mel_max_abs_err": 1e-2,
    }
    failed = [k for k, limit in limits.items() if report["checks"][k] is None or report["checks"][k] > limit]
    for key in ("extract_flux_spans_max_diff_samples", "extract_default_spans_max_diff_samples"):
        if report["checks"][key] is None or report["checks"][key] > 1:
            failed.append(key)
    report["failed"] = failed
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
