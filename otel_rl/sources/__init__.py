"""Measurements otel-rl makes itself: GPU gauges from NVML, system and process metrics."""
