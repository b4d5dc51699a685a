"""Benchmark (``make bench``): quality, speed and training throughput measured in one run.

Writes ``reports/benchmark.json`` with, for every gray model and classical method, PSNR/SSIM
and seconds per megapixel on the gray test images at base.noise_sigma (each classical method
with the settings the classical stage chose at that sigma); for every gray model, training
patches/s and achieved GFLOP/s beside a large float32 matrix multiply measured in the same run
(the machine's practical limit); where a training epoch of the tuned U-Net goes (optimizer
steps, input pipeline, validation); the U-Net's training patches/s in float32 and mixed_bfloat16
under each oneDNN instruction-set limit (what precision: auto weighs); and the whole-process
time of ``denoiselab denoise`` on a 1-megapixel photo beside BM3D's time on the same image. A
benchmark, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from denoiselab import (
    catalogue,
    classical,
    files,
    images,
    metrics,
    model_store,
    models,
    noise,
    paths,
    scoring,
    training,
)
from denoiselab.config import TrainConfig, load_params
from denoiselab.vocabulary import CLASSICAL_METHODS


def matmul_gflops(size: int = 4096, repeats: int = 5) -> float:
    """Best-of GFLOP/s of a float32 ``size`` x ``size`` matrix multiply (2 n^3 FLOPs)."""
    import tensorflow as tf

    # Seeded: unseeded random ops are an error under op determinism (the determinism probe).
    a = tf.random.stateless_uniform((size, size), seed=(0, 1))
    b = tf.random.stateless_uniform((size, size), seed=(0, 2))
    (a @ b).numpy()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        (a @ b).numpy()
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def training_throughput(
    configs: dict[str, TrainConfig],
    channels: int,
    patch_size: int,
    steps: int = 80,
    repeats: int = 3,
) -> tuple[dict[str, dict], float]:
    """Training throughput of each model, and the float32 matmul GFLOP/s beside it.

    Each model trains on random patches with its own settings (batch, crop, precision, steps
    per execution, the non-finite-loss check); after a warm-up epoch, every repeat times one
    epoch of ``steps`` steps per model (validation excluded) and a matmul, interleaved so that
    load from other processes hits all alike. Best of ``repeats`` for each.
    """
    rng = np.random.default_rng(0)
    clean = rng.random((512, patch_size, patch_size, channels)).astype(np.float32)
    setups = {}
    for name, config in configs.items():
        config = config.model_copy(
            update={"epochs": 1, "steps_per_epoch": steps, "lr_schedule": "constant"}
        )
        model = models.build_model(config.architecture(channels))
        training.compile_model(model, config)
        dataset = training.make_train_dataset(clean, clean, config, 0.1, 0)
        model.fit(dataset, steps_per_epoch=steps, verbose=0)  # builds the graph
        setups[name] = (config, model, dataset)
    best = dict.fromkeys(configs, 0.0)
    matmul = 0.0
    for _ in range(repeats):
        matmul = max(matmul, matmul_gflops(repeats=3))
        for name, (config, model, dataset) in setups.items():
            started = time.perf_counter()
            model.fit(
                dataset,
                steps_per_epoch=steps,
                verbose=0,
                callbacks=[training.StopOnNonFiniteLoss()],
            )
            seconds = time.perf_counter() - started
            best[name] = max(best[name], steps * config.batch_size / seconds)
    rows = {}
    for name, (config, model, _) in setups.items():
        crop = config.crop_size or patch_size
        flops = models.conv_flops_per_pixel(model, channels)
        gflops = best[name] * models.training_flops_per_patch(model, channels, crop) / 1e9
        rows[name] = {
            "patches_per_s": round(best[name], 1),
            "crop_size": crop,
            "batch_size": config.batch_size,
            "precision": models.model_precision(model),
            "steps_per_execution": training.steps_per_execution(config),
            "mflops_per_pixel": round(flops / 1e6, 4),
            "gflops_per_s": round(gflops, 1),
            "fraction_of_matmul": round(gflops / matmul, 3),
        }
    return rows, round(matmul, 1)


def step_breakdown(
    config: TrainConfig,
    clean: np.ndarray,
    validation_patches: int,
    steps: int = 64,
    repeats: int = 3,
) -> dict:
    """Where one epoch of ``config``'s training goes: the optimizer steps fed by the real input
    pipeline, the same steps fed batches already in memory (the difference is what the
    pipeline costs the steps, on the cores they share), the pipeline on its own, and one
    validation pass over ``validation_patches`` patches at each blind validation level, as
    ``fit`` runs it after every epoch. Best of ``repeats`` for each; ``clean`` are the training
    patches (NHWC in [0, 1])."""
    import tensorflow as tf

    channels, epoch_steps = clean.shape[-1], config.steps_per_epoch
    config = config.model_copy(
        update={"epochs": 1, "steps_per_epoch": steps, "lr_schedule": "constant"}
    )
    model = models.build_model(config.architecture(channels))
    training.compile_model(model, config)
    dataset = training.make_train_dataset(clean, None, config, 0.1, 0)
    batches = list(dataset.take(steps))
    # (noisy, clean) pairs, or (noisy, clean, loss weight) with loss_level_power.
    in_memory = tf.data.Dataset.from_tensor_slices(
        tuple(tf.stack(parts) for parts in zip(*batches, strict=True))
    ).repeat()
    validation = training.validation_data(
        clean[:validation_patches],
        clean[:validation_patches],
        config.noise_sigma_range,
        0,
        config.noise_map,
    )
    runs = {
        "real_pipeline": lambda: model.fit(dataset, steps_per_epoch=steps, verbose=0),
        "in_memory": lambda: model.fit(in_memory, steps_per_epoch=steps, verbose=0),
        "pipeline_alone": lambda: sum(1 for _ in dataset.take(steps)),
        # As fit validates after each epoch.
        "validation": lambda: model.evaluate(
            *validation, batch_size=max(config.batch_size, 32), verbose=0
        ),
    }
    for run in runs.values():  # builds the graphs
        run()
    best = dict.fromkeys(runs, np.inf)
    for _ in range(repeats):
        for key, run in runs.items():
            started = time.perf_counter()
            run()
            best[key] = min(best[key], time.perf_counter() - started)
    step = best["real_pipeline"] / steps
    return {
        "steps": steps,
        "batch_size": config.batch_size,
        "seconds_per_step": round(step, 4),
        "seconds_per_step_in_memory": round(best["in_memory"] / steps, 4),
        "input_pipeline_share_of_step": round(1 - best["in_memory"] / best["real_pipeline"], 3),
        "pipeline_alone_patches_per_s": round(steps * config.batch_size / best["pipeline_alone"]),
        "validation_patches": len(validation[0]),
        "validation_seconds": round(best["validation"], 2),
        "steps_per_epoch": epoch_steps,
        "validation_share_of_epoch": round(
            best["validation"] / (best["validation"] + step * epoch_steps), 3
        ),
    }


def determinism_cost(config: TrainConfig, channels: int, patch_size: int) -> dict:
    """Training patches/s with and without TensorFlow op determinism, each in its own process
    (determinism is process-wide), alternated twice so machine noise hits both alike."""
    probe = (
        "import json, sys; from denoiselab import bench, training; "
        "from denoiselab.config import TrainConfig; "
        "training.enable_op_determinism(sys.argv[1] == '1'); "
        "config = TrainConfig(**json.loads(sys.argv[2])); "
        "rows, _ = bench.training_throughput("
        "{'m': config}, int(sys.argv[3]), int(sys.argv[4]), repeats=1); "
        "print(json.dumps(rows['m']))"
    )
    rates: dict[str, list[float]] = {"default": [], "deterministic": []}
    for _ in range(2):
        for flag, key in (("0", "default"), ("1", "deterministic")):
            result = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    probe,
                    flag,
                    json.dumps(config.model_dump()),
                    str(channels),
                    str(patch_size),
                ],
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                lines = result.stderr.strip().splitlines() or ["no output"]
                raise RuntimeError(f"determinism probe ({key}) failed: {lines[-1]}")
            rates[key].append(json.loads(result.stdout.strip().splitlines()[-1])["patches_per_s"])
    default, deterministic = max(rates["default"]), max(rates["deterministic"])
    return {
        "default_patches_per_s": default,
        "deterministic_patches_per_s": deterministic,
        "slowdown": round(1 - deterministic / default, 3),
    }


# oneDNN instruction-set limits the ISA table compares: none (this CPU as it is), AVX-512
# without bfloat16 instructions, and AVX2 (CPUs without AVX-512).
ISA_LIMITS = ("default", "AVX512_CORE", "AVX2")


def isa_precision_table(
    config: TrainConfig,
    channels: int,
    patch_size: int,
    isas: tuple[str, ...] = ISA_LIMITS,
    rounds: int = 2,
    steps: int = 40,
) -> dict:
    """Training patches/s of ``config`` in float32 and mixed_bfloat16 under each oneDNN ISA
    limit (``ONEDNN_MAX_CPU_ISA``, read once when TensorFlow loads, hence a process per cell),
    interleaved ``rounds`` times so that machine noise hits all cells alike; best of rounds.

    Each cell records the precision that really ran: mixed_bfloat16 falls back to float32
    where oneDNN cannot run it (see :mod:`denoiselab.precision`).
    """
    probe = (
        "import json, sys; from denoiselab import bench; "
        "from denoiselab.config import TrainConfig; "
        "config = TrainConfig(**json.loads(sys.argv[1])); "
        "rows, _ = bench.training_throughput({'m': config}, int(sys.argv[2]), int(sys.argv[3]), "
        "steps=int(sys.argv[4]), repeats=1); "
        "print(json.dumps(rows['m']))"
    )
    cells = {isa: {} for isa in isas}
    for _ in range(rounds):
        for isa in isas:
            for requested in ("mixed_bfloat16", "float32"):
                env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
                if isa != "default":
                    env["ONEDNN_MAX_CPU_ISA"] = isa
                settings = json.dumps({**config.model_dump(), "precision": requested})
                result = subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        probe,
                        settings,
                        str(channels),
                        str(patch_size),
                        str(steps),
                    ],
                    capture_output=True,
                    text=True,
                    env=env,
                )
                if result.returncode != 0:
                    lines = result.stderr.strip().splitlines() or ["no output"]
                    raise RuntimeError(f"ISA probe ({isa}, {requested}) failed: {lines[-1]}")
                row = json.loads(result.stdout.strip().splitlines()[-1])
                cell = cells[isa].setdefault(
                    requested, {"patches_per_s": 0.0, "ran_as": row["precision"]}
                )
                cell["patches_per_s"] = max(cell["patches_per_s"], row["patches_per_s"])
    baseline = cells[isas[0]]["float32"]["patches_per_s"]
    for row in cells.values():
        for cell in row.values():
            cell["vs_default_float32"] = round(cell["patches_per_s"] / baseline, 2)
    return cells


def denoise_process_seconds(model_dir: Path, image: np.ndarray) -> float | None:
    """Whole-process wall time of ``denoiselab denoise`` on one image, start-up included."""
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "photo.png"
        pixels = (image[..., 0] * 255).round().astype(np.uint8)
        images.write_png(source, images.DecodedImage(pixels))
        command = [
            sys.executable,
            "-m",
            "denoiselab.cli",
            "denoise",
            str(source),
            "-o",
            str(Path(folder) / "out"),
            "--model",
            str(model_dir),
        ]
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True)
        seconds = time.perf_counter() - started
    if result.returncode != 0:
        print(f"denoise failed: {result.stderr.strip()[-500:]}", file=sys.stderr)
        return None
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--prepared", type=Path, default=paths.prepared_folder("gray"))
    parser.add_argument("--noisy", type=Path, default=paths.noisy_folder("gray"))
    parser.add_argument("--models", type=Path, default=Path(paths.MODELS_FOLDER))
    parser.add_argument(
        "--classical",
        type=Path,
        default=Path("reports/classical/gray.json"),
        help="the classical stage's report, whose settings at base.noise_sigma are scored",
    )
    parser.add_argument("--out", type=Path, default=Path("reports/benchmark.json"))
    args = parser.parse_args()

    params = load_params(args.params)
    sigma = params.base.noise_sigma
    channels = files.read_json(args.prepared / "manifest.json")["channels"]
    clean = files.load_arrays(args.prepared / "test.npz")
    noisy = files.load_arrays(args.noisy / "test.npz")
    report: dict = {
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "methods": {},
    }
    scores, _ = metrics.score_denoiser(lambda image: image, clean, noisy)
    report["methods"]["noisy"] = scoring.summary_row(scores)
    sections = {"cae": params.train_cae, "unet": params.train_unet}
    configs = {}
    for name in catalogue.GRAY_MODELS:
        info = files.read_json(args.models / name / model_store.CONFIG_FILE)
        denoiser = model_store.load_folder(args.models / name)
        scores, _ = metrics.score_denoiser(scoring.model_denoiser(denoiser), clean, noisy)
        report["methods"][name] = scoring.summary_row(scores)
        configs[name] = sections.get(name) or TrainConfig(**info["train_config"])
        print(name, report["methods"][name], flush=True)
    print("training throughput (interleaved with a float32 matmul, best of 3)...", flush=True)
    report["training"], report["matmul_gflops_per_s"] = training_throughput(
        configs, channels, params.prepare.patch_size
    )
    print(f"float32 matmul: {report['matmul_gflops_per_s']} GFLOP/s", flush=True)
    for name, row in report["training"].items():
        print(name, row, flush=True)
    validation_patches = len(files.load_arrays(args.prepared / "val.npz")["patches"])
    report["step_breakdown"] = step_breakdown(
        configs["unet_tuned"],
        files.load_arrays(args.prepared / "train.npz")["patches"],
        validation_patches,
    )
    print("unet_tuned step breakdown", report["step_breakdown"], flush=True)
    # The settings the classical stage chose at this sigma, or the first candidates without it.
    chosen = {}
    if args.classical.is_file():
        levels = files.read_json(args.classical)["levels"]
        chosen = levels.get(noise.level_key(sigma), {})
    for method in CLASSICAL_METHODS:
        if method in chosen:
            settings = chosen[method]["params"]
        else:
            settings = classical.param_grid(method, params.classical, sigma)[0]
        scores, _ = metrics.score_denoiser(
            scoring.classical_denoiser(method, sigma, settings), clean, noisy
        )
        report["methods"][method] = {**scoring.summary_row(scores), "params": settings}
        print(method, report["methods"][method], flush=True)
    report["determinism"] = determinism_cost(
        params.train_unet, channels, params.prepare.patch_size
    )
    print("determinism", report["determinism"], flush=True)
    print("training throughput by oneDNN ISA and precision (train_unet)...", flush=True)
    # One round keeps this to a few minutes (a process per cell); rerun the function with
    # more rounds for a closer comparison on a busy machine.
    report["isa_precision"] = isa_precision_table(
        params.train_unet, channels, params.prepare.patch_size, rounds=1
    )
    for isa, row in report["isa_precision"].items():
        print(isa, row, flush=True)
    megapixel = next(iter(clean.values()))
    size = 1024
    photo = np.pad(megapixel, ((0, max(0, size - megapixel.shape[0])),) * 2 + ((0, 0),), "reflect")
    photo = photo[:size, :size]
    seconds = denoise_process_seconds(args.models / "unet_tuned", photo)
    report["denoise_1mp_process_seconds"] = None if seconds is None else round(seconds, 2)
    bm3d_seconds_per_mp = report["methods"]["bm3d"]["seconds_per_megapixel"]
    report["bm3d_seconds_per_megapixel"] = bm3d_seconds_per_mp
    if seconds:
        report["speedup_vs_bm3d_1mp"] = round(bm3d_seconds_per_mp * size * size / 1e6 / seconds, 1)
    files.write_json(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
