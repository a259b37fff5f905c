-- How long until the soonest period end of a live subscription that renews (in
-- seconds), if one is still ahead.
SELECT extract(epoch FROM min(current_period_end) - now())::float8
FROM subscriptions
WHERE status IN ('active', 'past_due') AND auto_renew AND current_period_end > now()
