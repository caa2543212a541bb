"""What applications call: the producer client, the ``lightmem`` command line, dataset loaders."""
