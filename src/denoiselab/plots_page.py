"""The HTML page `dvc plots show` fills with the plots (.dvc/config names it), with Vega,
Vega-Lite and vega-embed inlined from the vl-convert-python package, so the page renders
without internet. DVC's own page loads them from a CDN.

`make install` writes it: ``python -m denoiselab.plots_page .dvc/plots_offline.html``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

# DVC's plot templates are Vega-Lite 5 specs.
VEGA_LITE_VERSION = "5.21"

# DVC replaces these in the page; the libraries must contain none of them.
PLACEHOLDERS = ("{plot_divs}", "{refresh_tag}", "{scripts}")

# DVC inserts its CDN script tags at {scripts}, so the page has no such placeholder.
PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <script type="text/javascript">
LIBRARIES
    </script>
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def page() -> str:
    """The page, with the libraries that set ``window.vegaEmbed`` before DVC's plot divs call
    it."""
    import vl_convert

    libraries = vl_convert.javascript_bundle(vl_version=VEGA_LITE_VERSION)
    found = [placeholder for placeholder in PLACEHOLDERS if placeholder in libraries]
    if found:
        raise ValueError(f"the Vega bundle contains DVC's placeholder {found[0]}")
    # The bundle sits inside a <script> element, which the first "</script" would close.
    libraries = libraries.replace("</script", "<\\/script")
    return PAGE.replace("LIBRARIES", libraries)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Writes the page that `dvc plots show` renders offline."
    )
    parser.add_argument("out", type=Path, help="where to write the page")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(page(), encoding="utf-8")


if __name__ == "__main__":
    main()
