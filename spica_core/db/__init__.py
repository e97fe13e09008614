"""dbspica: the pipeline's memory (DESIGN §4)."""

#: The range of an ``Integer`` column on every engine (MySQL INT): bounds for the numbers an
#: operator types (a priority, a row limit), so none overflows a driver. Kept here, away from
#: sqlalchemy, so the command line can declare its options without importing it.
INT_MIN, INT_MAX = -(2**31), 2**31 - 1
