"""QualityFITS-in (QFin): per-image quality assessment with the real AstrOmatic tools.

One QFin unit per image (step ``qfin``) runs ``source-extractor`` → ``psfex`` → ``spica qfin
record`` on the node holding the image, one unit at a time per raid partition.
"""
