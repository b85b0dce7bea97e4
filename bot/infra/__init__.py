"""The process: settings, logs, metrics, listeners, graceful shutdown and the instance lock."""
