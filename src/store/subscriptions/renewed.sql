-- A renewal paid: the period moves on, dunning over, access back if it had ended.
UPDATE subscriptions
   SET status = 'active',
       current_period_start = $2,
       current_period_end = $3,
       next_charge_at = $4,
       renewal_attempts = 0,
       past_due_since = NULL,
       ended_at = NULL,
       billing_anchor = COALESCE($5, billing_anchor),
       updated_at = now()
 WHERE id = $1
RETURNING {cols}
