-- Every subscription; `overdue`: live past its period end plus the longest wait
-- the contract allows (the whole dunning schedule or the refusal grace, plus 24 h
-- for a renewal in flight), passed in as $1.
SELECT id::text AS id, user_id::text AS user_id, status, auto_renew,
       to_char(current_period_end AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS') AS period_end,
       status IN ('active', 'past_due') AND current_period_end + $1::text::interval < now() AS overdue
FROM subscriptions
ORDER BY id
