SELECT count(*) AS backlog,
       COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 AS oldest
FROM outbox
WHERE sent_at IS NULL
