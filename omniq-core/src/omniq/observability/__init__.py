"""Observability plugins: Prometheus metrics from workers (:mod:`.prometheus`, extra
``omniq-core[prometheus]``) and OpenTelemetry traces (:mod:`.otel`, extra
``omniq-core[otel]``).

Importing this package imports neither library; each module imports its own only when
it is enabled, so a worker without them pays nothing per task.
"""
