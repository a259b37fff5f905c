UPDATE refunds SET attempts = attempts + 1, last_error = $2, updated_at = now(),
       next_attempt_at = now() + make_interval(secs => LEAST($3 * power(2, LEAST(attempts, 20)), $4))
WHERE id = $1 AND status = 'pending'
