"""precision: auto, and mixed_bfloat16 where the CPU cannot compute bfloat16 natively."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_parallel_tuning import write_data

from denoiselab import files, models, precision
from denoiselab.config import ModelConfig
from denoiselab.precision import Hardware

ROOT = Path(__file__).resolve().parents[1]
AVX512 = frozenset({"avx2", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni"})
BF16 = AVX512 | {"avx512_bf16"}
AMX = BF16 | {"amx_bf16", "amx_tile"}
AVX2 = frozenset({"avx", "avx2", "fma"})


@pytest.mark.parametrize(
    ("flags", "isa", "expected"),
    [
        (BF16, None, "mixed_bfloat16"),
        (AMX, None, "mixed_bfloat16"),
        (BF16, "ALL", "mixed_bfloat16"),
        (BF16, "avx512_core_bf16", "mixed_bfloat16"),
        (AMX, "AVX512_CORE_AMX", "mixed_bfloat16"),
        (AMX, "AVX10_1_512_AMX_FP16", "mixed_bfloat16"),
        (BF16, "AVX512_CORE_VNNI", "float32"),
        (BF16, "AVX512_CORE", "float32"),
        (BF16, "AVX2", "float32"),
        (BF16, "SSE41", "float32"),
        (BF16, "NOT_AN_ISA", "float32"),
        (AVX512, None, "float32"),
        (AVX2, None, "float32"),
        (frozenset(), None, "float32"),
    ],
)
def test_auto_is_bfloat16_only_where_the_cpu_computes_it_natively(flags, isa, expected):
    resolution = precision.choose("auto", Hardware(cpu_flags=flags, max_cpu_isa=isa))
    assert resolution.precision == expected
    assert resolution.warning is None


@pytest.mark.parametrize(
    ("capability", "expected"),
    [((9, 0), "mixed_bfloat16"), ((8, 0), "mixed_bfloat16"), ((7, 5), "float32")],
)
def test_auto_on_a_gpu_follows_its_compute_capability(capability, expected):
    # The GPU decides, whatever the CPU could do.
    hardware = Hardware(gpu_capability=capability, cpu_flags=AVX2)
    assert precision.choose("auto", hardware).precision == expected


@pytest.mark.parametrize(
    ("flags", "isa", "expected", "warns"),
    [
        (BF16, None, "mixed_bfloat16", False),
        (AVX512, None, "mixed_bfloat16", True),
        (BF16, "AVX512_CORE", "mixed_bfloat16", True),
        (BF16, "AVX2", "float32", True),
        (AVX2, None, "float32", True),
    ],
)
def test_explicit_bfloat16_runs_where_onednn_can_and_falls_back_where_it_cannot(
    flags, isa, expected, warns
):
    resolution = precision.choose("mixed_bfloat16", Hardware(cpu_flags=flags, max_cpu_isa=isa))
    assert resolution.precision == expected
    assert (resolution.warning is not None) == warns
    assert "\n" not in (resolution.warning or "")


def test_float32_is_always_float32():
    for hardware in (Hardware(cpu_flags=AMX), Hardware(gpu_capability=(9, 0))):
        assert precision.choose("float32", hardware).precision == "float32"


def test_cpu_flags_come_from_the_flags_line():
    cpuinfo = "processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\nflags\t: fpu\n"
    assert precision.cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512_bf16"}
    assert precision.cpu_flags("Features\t: fp asimd\n") == frozenset()


# Trains through runner.train_tracked (what the training stages run) under auto and under an
# explicit mixed_bfloat16, then runs for inference a model folder and a .keras file that were
# trained in mixed_bfloat16 on another CPU.
AVX2_SCRIPT = """
import json, sys
from pathlib import Path
import numpy as np
from denoiselab import models, runner
from denoiselab.config import load_params

params = load_params("params.yaml")
data = runner.load_training_data(Path("data/gray/prepared"), Path("data/gray/noisy"))
for section, name in (("train_unet", "auto"), ("train_cae", "bf16")):
    runner.train_tracked(
        name, section, getattr(params, section), params.base, data, Path("models", name),
        Path("reports", name + ".json"),
    )
batch = np.load("batch.npy")
outputs = {}
for path in ("trained_bf16", "trained_bf16.keras"):
    model, _ = models.load_any_model(path)
    outputs[path] = np.asarray(model(batch)).tolist()
Path("outputs.json").write_text(json.dumps(outputs))
"""


@pytest.mark.slow
def test_training_and_inference_work_on_a_cpu_without_avx512(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["prepare"]["patch_size"] = 16
    params["train"]["crop_size"] = None
    tiny = dict(base_filters=4, depth=2, epochs=2, steps_per_epoch=3, batch_size=8)
    params["train_unet"].update(tiny, precision="auto")
    params["train_cae"].update(tiny, precision="mixed_bfloat16")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    write_data(tmp_path)
    noisy = files.load_arrays(tmp_path / "data/gray/noisy/train.npz")["patches"]
    config = ModelConfig(model="unet", base_filters=4, depth=2, precision="mixed_bfloat16")
    trained = models.build_model(config)
    models.save_model_dir(trained, config, tmp_path / "trained_bf16", {})
    trained.save(tmp_path / "trained_bf16.keras")
    np.save(tmp_path / "batch.npy", noisy[:2])

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {key: value for key, value in os.environ.items() if not key.startswith("DVC_")}
    env.update(ONEDNN_MAX_CPU_ISA="AVX2", MLFLOW_TRACKING_URI=uri)
    result = subprocess.run(
        [sys.executable, "-c", AVX2_SCRIPT],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "auto: precision auto -> float32" in result.stdout
    assert "bf16: precision mixed_bfloat16 -> float32" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if "cannot run" in line]
    assert len(warnings) == 1 and "float32 instead" in warnings[0]

    import mlflow

    mlflow.set_tracking_uri(uri)
    for name in ("auto", "bf16"):
        info = json.loads((tmp_path / "models" / name / "config.json").read_text())
        assert info["model_config"]["precision"] == "float32"
        run = mlflow.MlflowClient().get_run(info["mlflow_run_id"])
        assert run.data.params["precision_resolved"] == "float32"
    # The same weights computed in float32 here give what the AVX2 process computed.
    float32_model = models.build_model(config.model_copy(update={"precision": "float32"}))
    float32_model.set_weights(trained.get_weights())
    expected = np.asarray(float32_model(noisy[:2]))
    outputs = json.loads((tmp_path / "outputs.json").read_text())
    for output in outputs.values():
        np.testing.assert_allclose(np.array(output), expected, atol=1e-5)


@pytest.mark.parametrize(("asked", "enabled"), [(None, True), ("0", False)])
def test_tensorflow_runs_its_onednn_kernels_unless_the_user_turns_them_off(asked, enabled):
    # TensorFlow turns oneDNN on by itself only on AVX512-VNNI CPUs and newer; on AVX2 CPUs
    # training ran at half the speed without it.
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if asked is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = asked
    code = (
        "import denoiselab, tensorflow\n"
        "from tensorflow.python.util import _pywrap_util_port as port\n"
        "print(port.IsMklEnabled())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.split()[-1] == str(enabled)
