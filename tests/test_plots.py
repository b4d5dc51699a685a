"""The figures: the noise sweep's PSNR against sigma, and the SSIM bars beside the sweep."""

import matplotlib.pyplot as plt
import pytest

from denoiselab import plots


def _row(psnr: float) -> dict:
    return {"psnr": psnr, "ssim": psnr / 40}


# Levels written out of order, so that only sorting by sigma puts the lines right; tv is missing
# at 0.05.
SWEEP = {
    "gray": {
        "0.2": {
            "champion": _row(27.0),
            "noisy": _row(14.0),
            "unet_tuned": _row(27.0),
            "tv": _row(25.0),
        },
        "0.05": {"champion": _row(35.0), "noisy": _row(26.0), "unet_tuned": _row(35.0)},
    },
    "colour": {"0.1": {"champion": _row(31.0), "noisy": _row(20.0), "bm3d": _row(30.5)}},
    "champions": {"gray": "unet_tuned", "colour": "unet_rgb"},
}


@pytest.fixture
def figure():
    figure = plots.psnr_vs_sigma(SWEEP, dpi=50)
    yield figure
    plt.close(figure)


def _lines(axis) -> dict[str, tuple[list[float], list[float]]]:
    return {
        line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
        for line in axis.get_lines()
    }


def test_psnr_vs_sigma_draws_each_dataset_in_its_panel(figure):
    gray_axis, colour_axis = figure.axes
    assert "gray" in gray_axis.get_title()
    assert "colour" in colour_axis.get_title()
    gray = _lines(gray_axis)
    assert set(gray) == {"champion (tuned U-Net)", "noisy input", "tuned U-Net", "TV"}
    # The champion's PSNR in sigma order, not in the order the levels were written.
    assert gray["champion (tuned U-Net)"] == ([0.05, 0.2], [35.0, 27.0])
    assert gray["noisy input"] == ([0.05, 0.2], [26.0, 14.0])
    assert gray["TV"] == ([0.2], [25.0])
    colour = _lines(colour_axis)
    assert set(colour) == {"champion (colour U-Net)", "noisy input", "CBM3D"}
    assert colour["champion (colour U-Net)"] == ([0.1], [31.0])


def test_psnr_vs_sigma_champion_stands_out_and_noisy_is_dashed(figure):
    lines = {line.get_label(): line for line in figure.axes[0].get_lines()}
    champion, model = lines["champion (tuned U-Net)"], lines["tuned U-Net"]
    assert champion.get_linewidth() > model.get_linewidth()
    assert champion.get_zorder() > model.get_zorder()
    assert lines["noisy input"].get_linestyle() == "--"
    assert lines["TV"].get_linestyle() == "-"
    legend = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert legend[0] == "champion (tuned U-Net)"


def test_psnr_vs_sigma_without_a_colour_sweep_leaves_its_panel_empty():
    figure = plots.psnr_vs_sigma({"gray": SWEEP["gray"]}, dpi=50)
    gray_axis, colour_axis = figure.axes
    assert "champion" in _lines(gray_axis)
    assert colour_axis.get_lines() == []
    assert "no colour sweep" in [text.get_text() for text in colour_axis.texts]
    plt.close(figure)


def test_ssim_comparison_ignores_the_sweep():
    summary = {"noisy": _row(20.0), "unet_tuned": _row(31.0), "tv": _row(29.0), "sweep": SWEEP}
    figure = plots.ssim_comparison(summary, dpi=50)
    ssim_axis = figure.axes[0]
    labels = [label.get_text() for label in ssim_axis.get_yticklabels()]
    assert labels == ["noisy input", "TV", "tuned U-Net"]
    assert [bar.get_width() for bar in ssim_axis.patches] == [0.5, 29.0 / 40, 31.0 / 40]
    plt.close(figure)
