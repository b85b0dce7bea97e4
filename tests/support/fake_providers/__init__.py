"""Fake provider servers (Kling, fal, Runway) speaking each documented HTTP contract on 127.0.0.1."""
