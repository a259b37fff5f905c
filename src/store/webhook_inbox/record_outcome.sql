-- The outcome of one processing, on the row and in its history (one statement).
WITH done AS (
    UPDATE webhook_inbox SET attempts = attempts + 1, outcome = COALESCE($3, outcome), last_error = $4,
        -- A processed row stays processed: a slower processing of the same row
        -- (a replay beside the retry job) that ended worse does not undo it.
        status = CASE WHEN status = 'processed' AND $2 IN ('received', 'failed') THEN 'processed'
                      WHEN $2 = 'received' AND received_at < now() - interval '24 hours' THEN 'failed'
                      ELSE $2 END,
        processed_at = CASE WHEN $2 IN ('processed', 'ignored') THEN now() ELSE processed_at END,
        next_attempt_at = CASE WHEN $2 = 'received' AND status <> 'processed'
            THEN now() + LEAST(interval '5 seconds' * power(2, LEAST(attempts, 10)), interval '5 minutes') END
    WHERE id = $1 RETURNING id, attempts, status, provider
), logged AS (
    INSERT INTO webhook_attempts (inbox_id, attempt, status, outcome, error)
    SELECT id, attempts, status, $3, $4 FROM done
)
SELECT status, provider FROM done
