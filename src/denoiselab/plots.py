"""Figures drawn from recorded data (histories, metrics, denoised test images)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from denoiselab import catalogue, metrics  # noqa: E402

LABELS = {
    "noisy": "noisy input",
    **{name: entry.label for name, entry in catalogue.MODELS.items()},
    "tv": "TV",
    "wavelet": "wavelet",
    "nl_means": "NL-means",
    "bm3d": "BM3D",
    "clean": "clean",
    "champion": "champion",
}
COLOURS = {name: entry.colour for name, entry in catalogue.MODELS.items()}
# Line colours for the noise sweep, where the classical methods need telling apart too; the
# bar chart keeps them gray so that the learned models stand out.
SWEEP_COLOURS = {
    **COLOURS,
    "tv": "tab:brown",
    "wavelet": "tab:pink",
    "nl_means": "tab:olive",
    "bm3d": "tab:cyan",
    "noisy": "tab:gray",
    "champion": "black",
}
SWEEP_DATASETS = tuple(catalogue.DATASET_CHANNELS)
# The sweep's key naming the trained model each dataset's champion row is; not a noise level.
CHAMPIONS_KEY = "champions"


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
    """Test SSIM (and PSNR) per method, learned models beside the classical baselines.

    ``summary`` is the evaluate stage's metrics.json; entries that are not a method's scores
    (the noise sweep under ``"sweep"``) are skipped.
    """
    summary = {
        name: row for name, row in summary.items() if isinstance(row, dict) and "ssim" in row
    }
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


def _sweep_label(method: str, dataset: str, champions: dict[str, str]) -> str:
    """The legend label of a sweep line: the champion names the model it is, and BM3D on
    colour images is CBM3D."""
    if method == "champion":
        model = champions.get(dataset)
        return f"champion ({LABELS.get(model, model)})" if model else LABELS["champion"]
    if method == "bm3d" and dataset == "colour":
        return "CBM3D"
    return LABELS.get(method, method)


def _sweep_order(methods: set[str]) -> list[str]:
    """The order of the legend: the champion, the noisy input, then the rest as in LABELS."""
    known = [name for name in ("champion", "noisy", *LABELS) if name in methods]
    return list(dict.fromkeys([*known, *sorted(methods)]))


def psnr_vs_sigma(sweep: dict, dpi: int):
    """Test PSNR (dB) against the noise sigma for each method, gray and colour side by side.

    ``sweep`` is metrics.json's ``"sweep"``: ``{dataset: {sigma: {method: {"psnr": ...}}}}``
    with sigma keys such as ``"0.05"`` (on images in [0, 1]) and an optional ``"champions"``
    entry naming the trained model behind each dataset's champion row. A method missing at
    some level is drawn through the levels it has; a dataset missing from the sweep gets an
    empty panel that says so.
    """
    champions = sweep.get(CHAMPIONS_KEY) or {}
    figure, axes = plt.subplots(1, len(SWEEP_DATASETS), figsize=(12, 4.5))
    for axis, dataset in zip(axes, SWEEP_DATASETS, strict=True):
        levels = sorted(sweep.get(dataset) or {}, key=float)
        axis.set_title(f"{dataset} test images: PSNR against noise level")
        if not levels:
            axis.text(
                0.5, 0.5, f"no {dataset} sweep", ha="center", va="center", transform=axis.transAxes
            )
            axis.set_xticks([])
            axis.set_yticks([])
            continue
        methods = {method for level in levels for method in sweep[dataset][level]}
        for method in _sweep_order(methods):
            points = [
                (float(level), sweep[dataset][level][method]["psnr"])
                for level in levels
                if method in sweep[dataset][level]
            ]
            sigmas, psnrs = zip(*points, strict=True)
            style = {"color": SWEEP_COLOURS.get(method), "marker": "o", "markersize": 4}
            if method == "champion":
                # It repeats one trained model's line; the higher zorder keeps it on top.
                style.update(linewidth=3, markersize=8, zorder=5)
            elif method == "noisy":
                style.update(linestyle="--")
            axis.plot(sigmas, psnrs, label=_sweep_label(method, dataset, champions), **style)
        axis.set_xlabel("noise sigma (images in [0, 1])")
        axis.set_ylabel("mean test PSNR (dB)")
        axis.set_xticks([float(level) for level in levels])
        top = axis.secondary_xaxis("top", functions=(lambda s: s * 255, lambda v: v / 255))
        top.set_xlabel("noise sigma (0-255 units)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.set_dpi(dpi)
    return figure
