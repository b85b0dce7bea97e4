"""The durable render queue: scheduling, the worker that drives jobs, and what it needs from delivery."""
