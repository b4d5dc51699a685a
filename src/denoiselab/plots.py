"""Figures drawn from recorded data (histories, metrics, denoised test images)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from denoiselab import metrics  # noqa: E402

LABELS = {
    "noisy": "noisy input",
    "cae": "CAE",
    "unet": "U-Net",
    "unet_tuned": "tuned U-Net",
    "tv": "TV",
    "wavelet": "wavelet",
    "nl_means": "NL-means",
    "bm3d": "BM3D",
    "clean": "clean",
}
COLOURS = {"cae": "tab:orange", "unet": "tab:blue", "unet_tuned": "tab:green"}


def loss_comparison(histories: dict[str, list[dict]], dpi: int):
    """Training (solid) and validation (dashed) loss per epoch, plus validation PSNR."""
    figure, (loss_axis, psnr_axis) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, rows in histories.items():
        epochs = [row["epoch"] for row in rows]
        colour = COLOURS.get(name)
        loss_axis.plot(
            epochs, [row["loss"] for row in rows], "-", color=colour, label=f"{LABELS[name]} train"
        )
        loss_axis.plot(
            epochs,
            [row["val_loss"] for row in rows],
            "--",
            color=colour,
            label=f"{LABELS[name]} val",
        )
        psnr_axis.plot(
            epochs, [row["val_psnr"] for row in rows], "-", color=colour, label=LABELS[name]
        )
    loss_axis.set_yscale("log")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("loss (CAE: BCE; U-Nets: their tuned loss)")
    loss_axis.set_title("Training and validation loss")
    loss_axis.legend(fontsize=8)
    psnr_axis.set_xlabel("epoch")
    psnr_axis.set_ylabel("validation PSNR (dB)")
    psnr_axis.set_title("Validation PSNR per epoch (patches)")
    psnr_axis.legend(fontsize=8)
    figure.tight_layout()
    figure.set_dpi(dpi)
    return figure


def ssim_comparison(summary: dict[str, dict], dpi: int):
    """Test SSIM (and PSNR) per method, learned models beside the classical baselines."""
    names = sorted(summary, key=lambda name: summary[name]["ssim"])
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for axis, key, unit in ((axes[0], "ssim", ""), (axes[1], "psnr", " (dB)")):
        values = [summary[name][key] for name in names]
        colours = [COLOURS.get(name, "tab:gray") for name in names]
        bars = axis.barh([LABELS.get(name, name) for name in names], values, color=colours)
        axis.bar_label(bars, fmt="%.3f" if key == "ssim" else "%.2f", padding=3, fontsize=8)
        axis.set_xlabel(f"mean test {key.upper()}{unit}")
        axis.set_xlim(min(values) * 0.9, max(values) * 1.06)
    axes[0].set_title("SSIM on the whole test images")
    axes[1].set_title("PSNR on the whole test images")
    figure.tight_layout()
    figure.set_dpi(dpi)
    return figure


def sample_comparison(
    clean: dict[str, np.ndarray],
    denoised: dict[str, dict[str, np.ndarray]],
    columns: list[str],
    n_samples: int,
    dpi: int,
):
    """A grid: one row per test image, columns noisy | models ... | clean, scores in titles."""
    names = sorted(clean)[:n_samples]
    all_columns = [*columns, "clean"]
    figure, axes = plt.subplots(
        len(names),
        len(all_columns),
        figsize=(2.6 * len(all_columns), 2.8 * len(names)),
        squeeze=False,
    )
    for row, image_name in enumerate(names):
        for col, method in enumerate(all_columns):
            image = clean[image_name] if method == "clean" else denoised[method][image_name]
            axis = axes[row, col]
            shown = image[..., 0] if image.shape[-1] == 1 else image
            axis.imshow(np.clip(shown, 0, 1), cmap="gray", vmin=0, vmax=1)
            axis.set_xticks([])
            axis.set_yticks([])
            if method == "clean":
                title = f"clean: {image_name}"
            else:
                title = (
                    f"{LABELS.get(method, method)}\n"
                    f"{metrics.psnr(clean[image_name], image):.2f} dB / "
                    f"{metrics.ssim(clean[image_name], image):.3f}"
                )
            axis.set_title(title, fontsize=8)
    figure.tight_layout()
    figure.set_dpi(dpi)
    return figure
