"""Making things: shot orders (what /animate queues), the queueing every order shares (shots and generated
sheets), and the prompt spine every provider reads."""
