-- Readiness: the server answers.
SELECT 1
