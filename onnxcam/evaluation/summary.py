"""The evaluation as people read it: a text table, the JSON document, the report's section and curves."""

from __future__ import annotations

from onnxcam.report.svg import line_chart

__all__ = ["COLUMNS", "rows", "text_table", "report_metrics"]

# (heading, MethodScores field, format); arrows say which way is better
COLUMNS = (
    ("method", "method", "{}"),
    ("deletion AUC ↓", "deletion_auc", "{:.3f}"),
    ("insertion AUC ↑", "insertion_auc", "{:.3f}"),
    ("avg drop % ↓", "average_drop", "{:.1f}"),
    ("incr. conf. % ↑", "increase_in_confidence", "{:.1f}"),
    ("ROAD MoRF ↓", "road_morf", "{:.3f}"),
    ("ROAD LeRF ↑", "road_lerf", "{:.3f}"),
    ("pointing ↑", "pointing_game", "{:.3f}"),
    ("energy PG ↑", "energy_pointing_game", "{:.3f}"),
    ("sanity ρ ↓", "sanity_spearman", "{:.3f}"),
    ("ms/image", "ms_per_image", "{:.1f}"),
    ("passes", "passes", "{}"),
)


def _cell(value, fmt: str, flagged: bool = False) -> str:
    if value is None:
        return "-"
    return fmt.format(value) + (" FAIL" if flagged else "")


def rows(methods: list[dict]) -> list[list[str]]:
    """One row of formatted cells per method (from MethodScores.as_dict()); a flagged sanity check says FAIL."""
    return [[_cell(m[field], fmt, field == "sanity_spearman" and bool(m.get("sanity_flagged")))
             for _, field, fmt in COLUMNS] for m in methods]


def text_table(methods: list[dict]) -> str:
    table = [[heading for heading, _, _ in COLUMNS], *rows(methods)]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in table)


def report_metrics(document: dict) -> dict:
    """The report's evaluation section from the eval JSON document: the table, notes and curves."""
    methods = document["methods"]
    deletion = {m["method"]: m["deletion_curve"] for m in methods}
    insertion = {m["method"]: m["insertion_curve"] for m in methods}
    return {
        "title": f"Faithfulness on {document['images']} image(s)",
        "columns": [heading for heading, _, _ in COLUMNS],
        "rows": rows(methods),
        "notes": document.get("notes", []),
        "charts": [line_chart("Deletion (lower is better)", deletion, "fraction of pixels removed", "probability"),
                   line_chart("Insertion (higher is better)", insertion, "fraction of pixels inserted", "probability")],
    }
