"""Graph memory (``graph_mem``): entities and relations from the extraction call, kept as nodes and
edges in the history database, and searched 1–2 hops around the entities a query names.

``model`` holds the facts and their stable ids, ``write`` stores a batch's facts, ``read`` walks the
graph (recursive queries), ``consolidate`` is the offline update's part (merge nodes, retire
contradicted edges) and ``search`` fuses the graph's entries with the normal results.
"""
