"""The durable render queue: scheduling, the worker that drives jobs, provider callbacks, retention, and what the worker needs from delivery."""
