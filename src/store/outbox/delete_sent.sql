DELETE FROM outbox WHERE id IN (
    SELECT id FROM outbox
    WHERE sent_at IS NOT NULL AND sent_at < now() - make_interval(secs => $1)
    LIMIT $2)
