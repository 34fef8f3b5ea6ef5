"""Extract stage: turn inputs (files, the gateway API) into :class:`RawRecord` streams
(or, for JSONL files, :class:`LineSlice` chunks that workers read themselves)."""

from pipeline.extract.api import (
    Client,
    FatalFetchError,
    FetchReport,
    fetch_to_archive,
    list_ids,
    read_archive,
    read_ids_file,
)
from pipeline.extract.files import (
    Chunk,
    LineSlice,
    RawRecord,
    chunked,
    iter_paths,
    read_chunks,
    read_records,
    read_stream,
)
from pipeline.redaction import redact

__all__ = [
    "Chunk",
    "Client",
    "FatalFetchError",
    "FetchReport",
    "LineSlice",
    "RawRecord",
    "chunked",
    "fetch_to_archive",
    "iter_paths",
    "list_ids",
    "read_archive",
    "read_chunks",
    "read_ids_file",
    "read_records",
    "read_stream",
    "redact",
]
