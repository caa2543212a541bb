"""The update: the offline ("sleep-time") queue and its decisions (``offline``), the online update after
each stored batch (``online``), and the LLM decider (``llm``, its prompt in ``prompt``)."""
