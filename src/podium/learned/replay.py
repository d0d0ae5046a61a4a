"""Replay datasets: recorded per-item outcomes of many models, for offline routing.

A dataset folder holds ``items.parquet`` (item_id, task, split, text), ``outcomes.parquet``
(item_id, model, score, cost_usd, output_chars) and ``models.json`` (optional per-model prices).
:func:`load_replay` turns it into dense arrays: ``scores[i, m]`` (NaN where the outcome is
unknown: a missing outcome is *unknown*, never 0) and ``costs[i, m]``.

Cost of one call, in order of preference (per cell):

1. the recorded ``cost_usd``;
2. the price table × tokens (input ≈ len(text)/4; output ≈ output_chars/4, else
   :data:`DEFAULT_OUTPUT_TOKENS`);
3. where no price is known but ``output_chars`` is: a nominal $1 per million output tokens,
   so cost is proportional to output length;
4. else a uniform cost per call (:data:`UNIFORM_CALL_COST`).

Nothing here is specific to one dataset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError, missing_extra

DEFAULT_OUTPUT_TOKENS = 256
UNIFORM_CALL_COST = 1e-4
CHARS_PER_TOKEN = 4.0
SPLITS = ("train", "test", "eval_only")


class ReplayDataError(UsageError):
    """A replay dataset folder is missing a file or has a malformed table."""


@dataclass
class ReplayDataset:
    """One dataset as dense arrays. Rows are items, columns are ``models``."""

    name: str
    path: str
    item_ids: np.ndarray
    tasks: np.ndarray
    splits: np.ndarray
    texts: list[str]
    models: list[str]
    scores: np.ndarray  # (n_items, n_models) float, NaN = unknown
    costs: np.ndarray  # (n_items, n_models) float USD (or nominal units, see cost_source)
    cost_source: str
    prices: dict[str, Any] = field(default_factory=dict)

    @property
    def known(self) -> np.ndarray:
        """Mask of cells whose outcome is recorded."""
        known: np.ndarray = ~np.isnan(self.scores)
        return known

    def indices(self, split: str) -> np.ndarray:
        """Row indices of one split."""
        return np.flatnonzero(self.splits == split)

    def describe(self) -> dict[str, Any]:
        """Size and provenance, for head metadata and reports."""
        counts = {s: int((self.splits == s).sum()) for s in SPLITS}
        return {
            "name": self.name,
            "path": self.path,
            "items": len(self.item_ids),
            "models": len(self.models),
            "splits": counts,
            "cost_source": self.cost_source,
        }


def _read_arrow(path: Path, columns: list[str]) -> Any:
    """The parquet table at ``path`` (a ``pyarrow.Table``), checked for ``columns``."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise missing_extra("pyarrow", "train") from None
    if not path.is_file():
        raise ReplayDataError(
            f"{path}: file not found; a replay dataset folder needs items.parquet, outcomes.parquet and models.json"
        )
    table = pq.read_table(path)
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ReplayDataError(f"{path}: missing column(s) {missing}; see docs/learned-coordinator.md for the format")
    return table


def _read_table(path: Path, columns: list[str]) -> dict[str, Any]:
    table = _read_arrow(path, columns)
    return {c: table.column(c).to_pylist() for c in columns}


def _floats(table: Any, column: str) -> np.ndarray:
    """A column as float64, missing values (and a missing column) as NaN: ``float(v)`` of each value."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if column not in table.column_names:
        return np.full(table.num_rows, np.nan)
    values = table.column(column)
    if pa.types.is_floating(values.type) or pa.types.is_integer(values.type):
        floats: np.ndarray = pc.cast(values, pa.float64(), safe=False).to_numpy(zero_copy_only=False)
        return floats
    return np.array(values.to_pylist(), dtype=np.float64)  # None becomes NaN, like the rest


def _lookup(values: Any, index: dict[Any, int]) -> np.ndarray:
    """``index.get(v, -1)`` for each value of an arrow column, looked up once per distinct value."""
    encoded = values.combine_chunks().dictionary_encode()
    distinct = [index.get(v, -1) for v in encoded.dictionary.to_pylist()] + [index.get(None, -1)]  # last: null
    codes = encoded.indices.fill_null(len(distinct) - 1).to_numpy(zero_copy_only=False)
    found: np.ndarray = np.array(distinct, dtype=np.intp)[codes]
    return found


def _cells(outcomes: Any, row: dict[Any, int], col: dict[Any, int], n: int) -> list[np.ndarray]:
    """(n, len(col)) score, recorded cost and output length of every outcome row (NaN where none).

    Outcome rows for items not listed are ignored; where an (item, model) pair recurs, the last row
    counts."""
    i, j = _lookup(outcomes.column("item_id"), row), _lookup(outcomes.column("model"), col)
    listed = np.flatnonzero(i >= 0)
    cell = i[listed] * len(col) + j[listed]
    _, first_from_end = np.unique(cell[::-1], return_index=True)
    last = listed[len(cell) - 1 - first_from_end]  # the last outcome row of each cell
    out = []
    for column in ("score", "cost_usd", "output_chars"):
        grid = np.full(n * len(col), np.nan)
        grid[i[last] * len(col) + j[last]] = _floats(outcomes, column)[last]
        out.append(grid.reshape(n, len(col)))
    return out


def _read_prices(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ReplayDataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ReplayDataError(f"{path}: must be an object mapping model name to prices")
    return data


def shipped_datasets() -> list[str]:
    """Names of the replay datasets that ship inside podium (``podium/data/NAME``)."""
    from importlib import resources

    folder = resources.files("podium") / "data"
    return (
        sorted(p.name for p in folder.iterdir() if p.is_dir() and (p / "items.parquet").is_file())
        if folder.is_dir()
        else []
    )


def dataset_folder(path: str | Path) -> Path:
    """The folder of a replay dataset given as a path or as a shipped dataset's name."""
    folder = Path(path).expanduser()
    if folder.is_dir():
        return folder
    shipped = shipped_datasets()
    if str(path) in shipped:
        from importlib import resources

        return Path(str(resources.files("podium") / "data" / str(path)))
    from ..suggest import did_you_mean

    raise ReplayDataError(
        f"{folder}: not a directory{did_you_mean(str(path), shipped)}; pass a replay dataset folder "
        f"or a shipped dataset ({', '.join(shipped) or 'none installed'})"
    )


def load_replay(path: str | Path) -> ReplayDataset:
    """Load a replay dataset folder, or a shipped one by name (see module docstring for the format)."""
    folder = dataset_folder(path)
    items = _read_table(folder / "items.parquet", ["item_id", "task", "split", "text"])
    outcomes = _read_arrow(folder / "outcomes.parquet", ["item_id", "model", "score"])
    prices = _read_prices(folder / "models.json")
    ids = items["item_id"]
    row = {item: i for i, item in enumerate(ids)}
    if len(row) != len(ids):
        raise ReplayDataError(f"{folder / 'items.parquet'}: item_id values are not unique")
    models = sorted(set(outcomes.column("model").unique().to_pylist()) | set(prices))
    scores, recorded, chars = _cells(outcomes, row, {m: j for j, m in enumerate(models)}, len(ids))
    texts = [t or "" for t in items["text"]]
    costs, source = resolve_costs(texts, models, prices, recorded, chars)
    splits = np.array([s or "train" for s in items["split"]])
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        raise ReplayDataError(f"{folder / 'items.parquet'}: unknown split value(s) {unknown}; use {', '.join(SPLITS)}")
    return ReplayDataset(
        folder.name,
        str(folder),
        np.array(ids),
        np.array([t or "" for t in items["task"]]),
        splits,
        texts,
        models,
        scores,
        costs,
        source,
        prices,
    )


def resolve_costs(
    texts: list[str], models: list[str], prices: dict[str, Any], recorded: np.ndarray, chars: np.ndarray
) -> tuple[np.ndarray, str]:
    """Per-call cost matrix and a word on where it came from (see module docstring)."""
    in_tok = np.array([len(t) / CHARS_PER_TOKEN for t in texts])[:, None]
    out_tok = np.where(np.isnan(chars), DEFAULT_OUTPUT_TOKENS, chars / CHARS_PER_TOKEN)
    p_in = np.array([float(prices.get(m, {}).get("input_usd_per_mtok", np.nan)) for m in models])[None, :]
    p_out = np.array([float(prices.get(m, {}).get("output_usd_per_mtok", np.nan)) for m in models])[None, :]
    table = (in_tok * p_in + out_tok * p_out) / 1e6
    by_length = np.where(np.isnan(chars), np.nan, chars / CHARS_PER_TOKEN / 1e6)
    costs = np.where(~np.isnan(recorded), recorded, np.where(~np.isnan(table), table, by_length))
    costs = np.where(np.isnan(costs), UNIFORM_CALL_COST, costs)
    sources = [
        name
        for name, arr in (("recorded_usd", recorded), ("price_table", table), ("output_length", by_length))
        if (~np.isnan(arr)).any()
    ]
    return costs, "+".join(sources) or "uniform_per_call"


def write_replay(
    out_dir: str | Path,
    items: list[dict[str, Any]],
    outcomes: list[dict[str, Any]],
    *,
    prices: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write a replay dataset folder: items.parquet, outcomes.parquet, models.json (and meta.json if given).

    ``meta`` (e.g. where the scores came from) goes to ``meta.json``, which :func:`load_replay` ignores.
    """
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise missing_extra("pyarrow", "train") from None
    folder = Path(out_dir).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    item_schema = pa.schema(
        [("item_id", pa.string()), ("task", pa.string()), ("split", pa.string()), ("text", pa.string())]
    )
    outcome_schema = pa.schema(
        [
            ("item_id", pa.string()),
            ("model", pa.string()),
            ("score", pa.float64()),
            ("cost_usd", pa.float64()),
            ("output_chars", pa.int64()),
        ]
    )
    pq.write_table(pa.Table.from_pylist(items, schema=item_schema), folder / "items.parquet")
    pq.write_table(pa.Table.from_pylist(outcomes, schema=outcome_schema), folder / "outcomes.parquet")
    (folder / "models.json").write_text(json.dumps(prices or {}, indent=2, sort_keys=True) + "\n")
    if meta is not None:
        (folder / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return folder
