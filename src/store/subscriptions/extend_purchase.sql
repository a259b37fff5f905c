-- The same tariff bought again: one more period, dunning over. A newly saved method
-- replaces the old one and moves the subscription to that method's provider (and
-- that provider's mode: its renewals carry it).
UPDATE subscriptions
   SET current_period_end = $2,
       status = 'active',
       auto_renew = $3,
       payment_method_id = $4,
       next_charge_at = $5,
       renewal_attempts = 0,
       past_due_since = NULL,
       pay_system = $6,
       livemode = $9,
       billing_anchor = COALESCE($7, billing_anchor),
       receipt = COALESCE($8, receipt),
       updated_at = now()
 WHERE id = $1
RETURNING {cols}
