"""Extract stage: turn inputs (files, the gateway API) into :class:`RawRecord` streams
(or, for JSONL files, :class:`LineSlice` chunks that workers read themselves)."""

from typing import TYPE_CHECKING, Any

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

# How a fetch error says a batch loaded but its request rows did not (the API client
# writes it, the run summary reads it): one spelling for both
ROWS_REASON = "request rows: "

if TYPE_CHECKING:
    from pipeline.extract.api import (
        Client,
        FatalFetchError,
        FetchReport,
        fetch_to_archive,
        list_ids,
        read_archive,
        read_ids_file,
    )

# The API client (httpx and its retries) is imported on first use: the transform
# workers, which import this package for the file readers, never load it.
_API = frozenset(
    {"Client", "FatalFetchError", "FetchReport", "fetch_to_archive", "list_ids"}
    | {"read_archive", "read_ids_file"}
)


def __getattr__(name: str) -> Any:
    if name in _API:
        from pipeline.extract import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ROWS_REASON",
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
