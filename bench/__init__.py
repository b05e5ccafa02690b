"""The ai-proxy benchmark: the proxy against a direct call to the same fake upstream, in one run.

Run it with `bash bench/run` (or `.venv/bin/python -m bench`); see docs/PERFORMANCE.md.
"""
