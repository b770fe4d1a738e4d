"""KPI rows to CSV or XLSX (one sheet, a header row, numbers as numbers) for Excel and Power BI."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from ticketing.kpis import KpiRow

COLUMNS = ("kpi", "dimension", "value", "unit", "n")


def to_csv(rows: Sequence[KpiRow]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in rows:
        writer.writerow([r.kpi, r.dimension, "" if r.value is None else f"{r.value:.6g}", r.unit, r.n])
    return buf.getvalue()


def to_xlsx(rows: Sequence[KpiRow], title: str = "KPIs") -> bytes:
    from openpyxl import Workbook
    from openpyxl.worksheet.worksheet import Worksheet

    wb = Workbook()
    ws = wb.active
    assert isinstance(ws, Worksheet)  # a new workbook has one sheet, active (the stubs allow none or a chart)
    ws.title = title[:31]
    ws.append(list(COLUMNS))
    for r in rows:
        ws.append([r.kpi, r.dimension, r.value, r.unit, r.n])
    ws.freeze_panes = "A2"
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()
