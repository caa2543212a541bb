"""Prompts as modules: a typed input, a response model, ``render()`` and a ``VERSION`` each."""
