"""The k-sweep: a grid of k-matrices for one cascade, each point benchmarked as a method of its own.

Grid file (YAML): `grid:` has the k-matrix's shape; each cell is a number or a list of numbers to
try. Every combination the config's rules accept (e.g. each drafter used somewhere) is a point; points
are static cascades (the config's `adaptive` section, if any, is dropped).

    grid:                      # for examples/csd-2level.yaml (columns: layers12, layers4, mag)
      - [[1, 2], 1, [2, 4]]
      - [0, [1, 2], 1]
      - [0, 0, [2, 3]]
"""

from __future__ import annotations

import itertools
from pathlib import Path

from tgi_csd.config import CascadeConfig, read_yaml
from tgi_csd.errors import ConfigError


def label(k_matrix: list[list[int]]) -> str:
    """`csd[2,1,2/2,1/3]`: each row from its diagonal on (entries left of it are always 0)."""
    return "csd[" + "/".join(",".join(map(str, row[r:])) for r, row in enumerate(k_matrix)) + "]"


def _cell(value: object, where: str, option: str) -> list[int]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        raise ConfigError(f"{option}: {where} must be a number >= 0 or a non-empty list of them, got {value!r}")
    return values


def grid_points(cells: list[list[list[int]]], config: CascadeConfig) -> tuple[list[CascadeConfig], int]:
    """Every combination of `cells[r][c]` (values to try per k-matrix entry) the config's rules accept,
    as static cascades over the config's drafters, and how many combinations were skipped."""
    shape = [len(row) for row in cells]
    points, skipped = [], 0
    for flat in itertools.product(*(values for row in cells for values in row)):
        rows = [list(flat[r * shape[0]:(r + 1) * shape[0]]) for r in range(len(shape))]
        try:
            points.append(CascadeConfig.model_validate({**config.model_dump(), "k_matrix": rows, "adaptive": None}))
        except ValueError:  # pydantic's ValidationError: this point breaks a config rule
            skipped += 1
    return points, skipped


def load_grid(path: Path, config: CascadeConfig, option: str = "--k-sweep") -> tuple[list[CascadeConfig], int]:
    """The grid's valid points as cascades over the config's drafters, and how many were skipped;
    bad files raise one error naming `option`."""
    data = read_yaml(path, option)
    shape = [len(row) for row in config.k_matrix]
    grid = data.get("grid") if isinstance(data, dict) and set(data) == {"grid"} else None
    if not isinstance(grid, list) or [len(row) if isinstance(row, list) else None for row in grid] != shape:
        raise ConfigError(f"{option}: {path} needs one key `grid` with the k-matrix's shape "
                          f"({len(shape)} rows of {shape[0]}), each cell a number or a list of numbers")
    cells = [[_cell(value, f"grid[{r}][{c}]", option) for c, value in enumerate(row)] for r, row in enumerate(grid)]
    points, skipped = grid_points(cells, config)
    if not points:
        raise ConfigError(f"{option}: no point of {path} is a valid k-matrix for this config "
                          "(each drafter must be used, entries left of the diagonal 0)")
    return points, skipped
