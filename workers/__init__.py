"""The Celery application, its queues and tasks: thin adapters over ``lightmem_core`` stages."""
