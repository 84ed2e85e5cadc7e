"""Small server-rendered SVG charts (no JavaScript, no CDN)."""

from __future__ import annotations

from markupsafe import Markup, escape


def stacked_bars(points: list[tuple[str, int, int]], *, width: int = 720, height: int = 180,
                 labels: tuple[str, str] = ("succeeded", "failed")) -> Markup:
    """Bars of (label, good, bad) stacked per point, with a few axis labels and a legend."""
    pad_left, pad_bottom, pad_top = 34, 22, 16
    inner_w, inner_h = width - pad_left - 6, height - pad_bottom - pad_top
    peak = max([good + bad for _, good, bad in points] + [1])
    slot = inner_w / max(1, len(points))
    parts = [f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{escape(labels[0])} and '
             f'{escape(labels[1])} per hour" xmlns="http://www.w3.org/2000/svg" font-size="10" '
             f'font-family="system-ui, sans-serif">']
    for step in range(3):
        value = round(peak * step / 2, 1)
        y = pad_top + inner_h - inner_h * step / 2
        parts.append(f'<line x1="{pad_left}" x2="{width - 6}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e6eb"/>')
        parts.append(f'<text x="{pad_left - 4}" y="{y + 3:.1f}" text-anchor="end" fill="#667085">{value:g}</text>')
    every = max(1, len(points) // 8)
    for i, (label, good, bad) in enumerate(points):
        x = pad_left + i * slot + slot * 0.15
        bar_w = max(slot * 0.7, 1)
        good_h = inner_h * good / peak
        bad_h = inner_h * bad / peak
        base = pad_top + inner_h
        title = f"<title>{escape(label)}: {good} {escape(labels[0])}, {bad} {escape(labels[1])}</title>"
        parts.append(f'<rect x="{x:.1f}" y="{base - good_h:.1f}" width="{bar_w:.1f}" height="{good_h:.1f}" '
                     f'fill="#3e9b63">{title}</rect>')
        if bad:
            parts.append(f'<rect x="{x:.1f}" y="{base - good_h - bad_h:.1f}" width="{bar_w:.1f}" '
                         f'height="{bad_h:.1f}" fill="#d14b4b">{title}</rect>')
        if i % every == 0:
            parts.append(f'<text x="{x:.1f}" y="{height - 6}" fill="#667085">{escape(label)}</text>')
    parts.append(f'<rect x="{width - 150}" y="2" width="9" height="9" fill="#3e9b63"/>'
                 f'<text x="{width - 138}" y="10">{escape(labels[0])}</text>'
                 f'<rect x="{width - 75}" y="2" width="9" height="9" fill="#d14b4b"/>'
                 f'<text x="{width - 63}" y="10">{escape(labels[1])}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
