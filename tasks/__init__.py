"""Prefect tasks: thin wrappers that read inputs, call the domain (mvcaug) and write outputs atomically.

Inputs such as tensors and models are not hashable for Prefect's cache, and DVC already decides what
reruns, so tasks use NO_CACHE.
"""
