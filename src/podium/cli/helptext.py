"""Help text shared by several commands: the environment variables podium reads."""

from __future__ import annotations

ENVIRONMENT = """\b
Environment variables:
  PODIUM_POOL          default for --pool (a shipped pool name or a YAML path)
  PODIUM_HOME          where traces (podium.db), breaker state and caches live
                       (default: the platform's user data dir)
  PODIUM_TRACES        full (default) | hash (digests instead of texts) | off
  PODIUM_DB            default for --db of `podium traces` and `podium ui`
  PODIUM_KEYS          default for --keys of `podium serve`
  PODIUM_BREAKER_FILE  where circuit-breaker state is shared ('' = nowhere)
  PODIUM_TRACES_URL    trace store: postgresql://... (default: the SQLite file)
  PODIUM_REDIS_URL     `podium serve`: share limits, budgets and breakers across replicas
  PODIUM_REDIS_TIMEOUT seconds before a Redis call falls back to local state (default 1)
  PODIUM_WORKERS       default for --workers of `podium serve`
  PODIUM_SERVE_WORKER  (set by `podium serve --workers` for its worker processes)
  PODIUM_HTTP_TRANSPORT  httpcore: use httpx's default pool instead of podium's lean transport
  PODIUM_HTTP_PARSER   `podium serve`: httptools (default) | h11, the request parser
  PODIUM_TRACE_WRITER  `podium serve`: process | thread, where traces are written (default:
                       process when a core is spare beyond the workers, else thread)
  PODIUM_CORS_ORIGINS  `podium serve`: browser origins allowed (comma-separated, * = any)
  PODIUM_REQUEST_LOG   `podium serve`: file for one JSON line per request (- = stderr)
  OTEL_EXPORTER_OTLP_ENDPOINT  `podium serve`: export OpenTelemetry spans and metrics
  API keys             named per model by `api_key_env` in the pool file, e.g.
                       OPENROUTER_API_KEY (openrouter), MISTRAL_API_KEY and
                       SCW_SECRET_KEY (eu); `podium doctor` lists what is missing"""
