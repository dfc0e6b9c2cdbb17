# SPDX-License-Identifier: MIT
"""Rows as a pandas DataFrame when pandas is importable, else as they are."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Union

if TYPE_CHECKING:
    import pandas

Rows = List[Dict[str, Any]]


def tabulate(rows: Rows) -> Union["pandas.DataFrame", Rows]:
    """``pandas.DataFrame(rows)`` (columns in first-seen order), or @rows
    (a list of dicts) when pandas is not installed."""
    try:
        import pandas
    except ImportError:
        return rows
    columns: Dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return pandas.DataFrame(rows, columns=list(columns))
