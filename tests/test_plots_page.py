"""`dvc plots show` renders offline: the page it fills has Vega, Vega-Lite and vega-embed
inlined and loads no script from the network."""

import configparser
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from denoiselab import plots_page

ROOT = Path(__file__).resolve().parents[1]
SCRIPT_TAG = re.compile(r"<script\b[^>]*>", re.IGNORECASE)


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("page") / "plots_offline.html"
    plots_page.main([str(path)])
    return path


def test_the_page_has_dvcs_placeholder_and_the_libraries_inline(page):
    text = page.read_text(encoding="utf-8")
    assert text.count("{plot_divs}") == 1
    # Without {scripts} DVC has nowhere to put its CDN script tags.
    assert "{scripts}" not in text
    assert "window.vegaEmbed=" in text
    assert [tag for tag in SCRIPT_TAG.findall(text) if "src" in tag] == []


def test_dvc_plots_show_writes_a_page_that_loads_no_script_over_the_network(page, tmp_path):
    history = [{"epoch": epoch, "loss": 1 / (epoch + 1)} for epoch in range(3)]
    (tmp_path / "history.json").write_text(json.dumps(history))
    plots = "plots:\n  - Loss:\n      x: epoch\n      y:\n        history.json: loss\n"
    (tmp_path / "dvc.yaml").write_text(plots)
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "init", "-q", "--no-scm"], cwd=tmp_path, check=True, timeout=120)
    subprocess.run(
        [*dvc, "plots", "show", "--html-template", str(page), "-o", "out"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=300,
    )
    html = (tmp_path / "out/index.html").read_text(encoding="utf-8")
    assert "vegaEmbed(" in html and '"loss"' in html
    assert not re.search(r"""<script\b[^>]*\bsrc\s*=\s*["']?(https?:)?//""", html, re.IGNORECASE)
    assert "cdn." not in html


def test_the_project_renders_its_plots_with_the_page_make_install_writes():
    config = configparser.ConfigParser()
    config.read(ROOT / ".dvc/config")
    # DVC takes a relative template path from the .dvc folder.
    template = f".dvc/{config['plots']['html_template']}"
    assert f"PLOTS_PAGE := {template}\n" in (ROOT / "Makefile").read_text()
    assert f"/{template}\n" in (ROOT / ".gitignore").read_text()
