"""Synthetic MegaCam-like exposures: the truth SPICA's ingestion and science are tested on.

:mod:`.layout` decides what an exposure's headers say (the observation and the focal plane's
per-CCD TAN WCS); :mod:`.writer` turns that into ``.fits`` / ``.fits.gz`` / ``.fits.fz`` files
whose pixels come from a pluggable source (noise for now; stars from a known sky later);
:mod:`.runid` writes a whole runid's worth. Everything is seeded: the same seed gives the
same bytes.
"""
