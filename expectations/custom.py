"""Arkivflöde's own Great Expectations (GX 1.x) expectations.

Importing this module registers three column map expectations with GX, so a suite can name
them by their snake_case type just like a built-in one:

- ``expect_column_values_to_be_valid_personnummer``
- ``expect_column_values_to_be_valid_organisationsnummer``
- ``expect_column_values_to_be_existing_files``

Each is a :class:`ColumnMapExpectation` over a :class:`ColumnMapMetricProvider` with a
pandas ``column_condition_partial``; GX drops null values before the condition runs, so a
null is never "unexpected" here (pair with ``expect_column_values_to_not_be_null`` when a
value is required). Only the pandas engine is implemented: batches are validated as
DataFrames read from Parquet staging files.

This module imports great_expectations at import time, which takes seconds; import it
lazily (``transforms.quality.checks`` does so inside ``check_batch``).
"""

from __future__ import annotations

import os
from typing import ClassVar

from great_expectations.execution_engine import PandasExecutionEngine
from great_expectations.expectations.expectation import ColumnMapExpectation
from great_expectations.expectations.metrics.map_metric_provider import (
    ColumnMapMetricProvider,
    column_condition_partial,
)

from transforms.common.identifiers import is_valid_organisationsnummer, is_valid_personnummer

__all__ = [
    "CUSTOM_EXPECTATION_TYPES",
    "ExpectColumnValuesToBeExistingFiles",
    "ExpectColumnValuesToBeValidOrganisationsnummer",
    "ExpectColumnValuesToBeValidPersonnummer",
]

# Metric names live in one global GX registry; the "arkiv_" prefix keeps ours from ever
# colliding with a GX or contrib metric of the same idea.
_PNR_METRIC = "column_values.arkiv_valid_personnummer"
_ORGNR_METRIC = "column_values.arkiv_valid_organisationsnummer"
_FILE_METRIC = "column_values.arkiv_existing_file"


def _is_existing_file(value: object) -> bool:
    # Only absolute paths count: a relative path would be resolved against the worker's
    # current directory, which says nothing about the staged batch.
    if not isinstance(value, str) or not os.path.isabs(value):
        return False
    return os.path.isfile(value)


class ColumnValuesValidPersonnummer(ColumnMapMetricProvider):
    """Per-row truth of ``transforms.common.identifiers.is_valid_personnummer``."""

    condition_metric_name = _PNR_METRIC

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column, **kwargs):
        return column.map(is_valid_personnummer).astype(bool)


class ColumnValuesValidOrganisationsnummer(ColumnMapMetricProvider):
    """Per-row truth of ``transforms.common.identifiers.is_valid_organisationsnummer``."""

    condition_metric_name = _ORGNR_METRIC

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column, **kwargs):
        return column.map(is_valid_organisationsnummer).astype(bool)


class ColumnValuesExistingFile(ColumnMapMetricProvider):
    """Per-row truth of "this absolute path names a regular file"."""

    condition_metric_name = _FILE_METRIC

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column, **kwargs):
        return column.map(_is_existing_file).astype(bool)


class ExpectColumnValuesToBeValidPersonnummer(ColumnMapExpectation):
    """Expect each non-null value to be a valid Swedish personnummer or samordningsnummer.

    Both the 10- and 12-digit forms are accepted; the date must exist and the Luhn check
    digit must agree. Nulls are ignored.
    """

    map_metric = _PNR_METRIC
    success_keys: ClassVar[tuple[str, ...]] = ("mostly",)
    library_metadata: ClassVar[dict] = {"maturity": "production", "tags": ["arkivflode", "sweden"]}


class ExpectColumnValuesToBeValidOrganisationsnummer(ColumnMapExpectation):
    """Expect each non-null value to be a valid Swedish organisationsnummer (Luhn-checked).

    Nulls are ignored.
    """

    map_metric = _ORGNR_METRIC
    success_keys: ClassVar[tuple[str, ...]] = ("mostly",)
    library_metadata: ClassVar[dict] = {"maturity": "production", "tags": ["arkivflode", "sweden"]}


class ExpectColumnValuesToBeExistingFiles(ColumnMapExpectation):
    """Expect each non-null value to be an absolute path to an existing regular file.

    Used on the extractor's ``source_path`` column: a document whose file is missing cannot
    be packaged. Nulls are ignored.
    """

    map_metric = _FILE_METRIC
    success_keys: ClassVar[tuple[str, ...]] = ("mostly",)
    library_metadata: ClassVar[dict] = {"maturity": "production", "tags": ["arkivflode", "files"]}


#: The snake_case types this module registers, for error messages and suite linting.
CUSTOM_EXPECTATION_TYPES: tuple[str, ...] = (
    ExpectColumnValuesToBeValidPersonnummer.expectation_type,
    ExpectColumnValuesToBeValidOrganisationsnummer.expectation_type,
    ExpectColumnValuesToBeExistingFiles.expectation_type,
)
