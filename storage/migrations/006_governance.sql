-- Budgets, limits, moderation (filled in).
SELECT 1;
