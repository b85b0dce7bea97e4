-- Character visibility (filled in by the sharing work).
SELECT 1;
