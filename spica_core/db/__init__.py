"""dbspica: the pipeline's memory (DESIGN §4)."""
