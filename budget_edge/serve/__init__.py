"""Serving an artifact dir over the Open Inference Protocol (v2, KServe/Triton) on HTTP.

Torch-free like the runtime it wraps; needs the `serve` extra (Starlette, uvicorn).
"""
