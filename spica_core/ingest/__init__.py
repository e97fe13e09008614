"""``spica ingest``: FITS headers of incoming exposures -> dbspica's ``image`` rows.

:mod:`.fitsscan` walks a file's HDU structure without a FITS library (it runs in the node
agent too) and keeps the two headers ingestion reads; :mod:`.header_map` holds each
instrument's mapping from header keys to columns, loaded from ``instruments/*.toml``;
:mod:`.record` turns scanned headers into a validated :class:`~.record.ImageRecord`;
:mod:`.walk` expands the operator's paths; :mod:`.writer` upserts into dbspica;
:mod:`.service` runs a batch.
"""
