import json
import os
import stat

import numpy as np
import pytest

from denoiselab import files


def strict_loads(text):
    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_write_json_writes_strict_json_with_null_for_missing_values(tmp_path):
    path = tmp_path / "report.json"
    data = {
        "val_psnr": float("nan"),
        "psnr": float("inf"),
        "rows": [np.float32(np.nan), -np.inf, (1.5, np.float64(2.5))],
        "kept": {"ssim": 0.5, "count": 3, "name": "camera", "flag": True},
    }
    files.write_json(path, data)
    assert strict_loads(path.read_text()) == {
        "val_psnr": None,
        "psnr": None,
        "rows": [None, None, [1.5, 2.5]],
        "kept": {"ssim": 0.5, "count": 3, "name": "camera", "flag": True},
    }


@pytest.fixture
def umask():
    def set_umask(mask):
        previous = os.umask(mask)
        restore.append(previous)

    restore = []
    yield set_umask
    for previous in reversed(restore):
        os.umask(previous)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_outputs_get_the_usual_permissions(tmp_path, umask, mask, mode):
    umask(mask)
    files.write_json(tmp_path / "a.json", {"a": 1})
    files.save_arrays(tmp_path / "a.npz", {"x": np.zeros(3)})
    with files.atomic_path(tmp_path / "raw.bin") as temporary:
        temporary.write_bytes(b"x")
    for name in ("a.json", "a.npz", "raw.bin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


def test_atomic_path_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "out" / "result.txt"
    with files.atomic_path(target) as temporary:
        assert temporary.parent == target.parent and temporary.is_file()
        assert not target.exists()
        temporary.write_text("new")
    assert target.read_text() == "new"
    assert os.listdir(target.parent) == ["result.txt"]


def test_atomic_path_keeps_the_target_after_an_exception(tmp_path):
    target = tmp_path / "result.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="killed"):
        with files.atomic_path(target) as temporary:
            temporary.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["result.txt"]
