"""Sensory memory: pre-compression (``compressors``), topic segmentation (``segmenters``), the
sensory buffer that feeds the segmenter (``buffer``), and the builders that wire them from the
configuration (``builders``)."""
