"""Making things: shot orders (what /animate queues) and the prompt spine every provider reads."""
