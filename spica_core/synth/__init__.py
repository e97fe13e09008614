"""Synthetic MegaCam-like exposures: the truth SPICA's ingestion and science are tested on.

:mod:`.layout` decides what an exposure's headers say (the observation and the focal plane's
per-CCD TAN WCS); :mod:`.writer` turns that into ``.fits`` / ``.fits.gz`` / ``.fits.fz`` files
whose pixels come from a pluggable source; :mod:`.runid` writes a whole runid's worth.
Everything is seeded: the same seed gives the same bytes.

The pixels of the sky: :mod:`.sky` is one fixed catalogue of stars and galaxies (per sky
cell, so overlapping exposures share sources), :mod:`.observing` the night's conditions
(seeing, sky, zero point, pointing error), :mod:`.psf` the pixel-integrated Moffat PSF,
:mod:`.render` a CCD drawn through its true WCS with noise and saturation, :mod:`.truth` what
was drawn (``<image>.truth.fits``, and :func:`.truth.write_sky_exposure` writing both), and
:mod:`.refcat` a FITS_LDAC reference catalogue of the same sky for SCAMP.
"""
