"""Extract stage: turn inputs (files, the gateway API) into :class:`RawRecord` streams."""

from pipeline.extract.api import (
    Client,
    FatalFetchError,
    FetchReport,
    fetch_to_archive,
    list_ids,
    read_archive,
    read_ids_file,
)
from pipeline.extract.files import RawRecord, iter_paths, read_records
from pipeline.redaction import redact

__all__ = [
    "Client",
    "FatalFetchError",
    "FetchReport",
    "RawRecord",
    "fetch_to_archive",
    "iter_paths",
    "list_ids",
    "read_archive",
    "read_ids_file",
    "read_records",
    "redact",
]
