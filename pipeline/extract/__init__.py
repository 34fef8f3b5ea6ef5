"""Extract stage: turn inputs (files, the gateway API) into :class:`RawRecord` streams."""

from pipeline.extract.files import RawRecord, iter_paths, read_records, redact

__all__ = ["RawRecord", "iter_paths", "read_records", "redact"]
