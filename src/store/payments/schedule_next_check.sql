-- Still open after a check: the next one $2 seconds doubling per check, capped at $3;
-- answers the status and whether the payment is older than $4 hours.
UPDATE payments SET check_attempts = check_attempts + 1, lease_until = NULL,
       next_check_at = now() + make_interval(secs => LEAST($2 * power(2, LEAST(check_attempts, 20)), $3)),
       updated_at = now()
WHERE id = $1 AND status IN ('pending', 'waiting_for_capture') AND review_reason IS NULL
RETURNING status, created_at < now() - make_interval(hours => $4) AS too_old
