"""Line charts as inline SVG (deletion and insertion curves), drawn without a plotting library."""

from __future__ import annotations

from html import escape

__all__ = ["line_chart"]

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
WIDTH, HEIGHT = 360, 220
LEFT, RIGHT, TOP, BOTTOM = 40, 110, 24, 32


def line_chart(title: str, series: dict[str, list[float]], x_label: str, y_label: str) -> str:
    """An SVG of each series against x = 0..1 (evenly spaced points); y from 0 to the largest value."""
    top = max((v for values in series.values() for v in values if v is not None), default=1.0)
    top = top if top > 0 else 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def point(i: int, count: int, value: float) -> str:
        x = LEFT + plot_w * (i / max(count - 1, 1))
        y = TOP + plot_h * (1 - value / top)
        return f"{x:.1f},{y:.1f}"

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">',
             f'<text x="{LEFT}" y="15" font-size="13" font-weight="bold">{escape(title)}</text>',
             f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>']
    for tick in (0.0, 0.5, 1.0):
        y = TOP + plot_h * (1 - tick)
        parts.append(f'<text x="{LEFT - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end">{tick * top:.2g}</text>')
        x = LEFT + plot_w * tick
        parts.append(f'<text x="{x:.1f}" y="{TOP + plot_h + 12}" font-size="10" text-anchor="middle">{tick:g}</text>')
    parts.append(f'<text x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 4}" font-size="11" '
                 f'text-anchor="middle">{escape(x_label)}</text>')
    parts.append(f'<text x="10" y="{TOP + plot_h / 2:.1f}" font-size="11" text-anchor="middle" '
                 f'transform="rotate(-90 10 {TOP + plot_h / 2:.1f})">{escape(y_label)}</text>')
    for n, (name, values) in enumerate(series.items()):
        colour = PALETTE[n % len(PALETTE)]
        points = " ".join(point(i, len(values), v) for i, v in enumerate(values) if v is not None)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{points}">'
                     f'<title>{escape(name)}</title></polyline>')
        legend_y = TOP + 12 * n + 8
        parts.append(f'<line x1="{WIDTH - RIGHT + 8}" y1="{legend_y - 4}" x2="{WIDTH - RIGHT + 22}" '
                     f'y2="{legend_y - 4}" stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<text x="{WIDTH - RIGHT + 26}" y="{legend_y}" font-size="10">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)
