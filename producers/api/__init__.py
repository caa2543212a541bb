"""The HTTP API (``lightmem api``): FastAPI over the producer SDK, versioned under ``/v1``."""
