-- A tariff change applied (paid now, or by the renewal that charged the scheduled
-- tariff): the new tariff's price and period, a new period from $7 that is also
-- the new billing anchor, dunning over, nothing left scheduled.
UPDATE subscriptions
   SET tariff_id = $2,
       price_minor = $3,
       currency = $4,
       period_count = $5,
       period_unit = $6,
       status = 'active',
       current_period_start = $7,
       current_period_end = $8,
       billing_anchor = $7,
       auto_renew = $9,
       payment_method_id = $10,
       next_charge_at = $11,
       pay_system = $12,
       livemode = $13,
       receipt = COALESCE($14, receipt),
       renewal_attempts = 0,
       past_due_since = NULL,
       ended_at = NULL,
       scheduled_tariff_id = NULL,
       updated_at = now()
 WHERE id = $1
RETURNING {cols}
