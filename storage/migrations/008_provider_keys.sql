-- Per-server provider keys (filled in by the BYOK work).
SELECT 1;
