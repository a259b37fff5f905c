-- Issue 10: a full refund is decided by the period the payment paid, and refunds the
-- provider left open are followed up (re-sent within the key window, re-read, or ended).

-- The end of the period a payment paid, set when it succeeds. With `period_start`
-- (now also set for purchases) a refund looks the period up instead of guessing it.
ALTER TABLE payments ADD COLUMN period_end timestamptz;

-- Refund follow-up: when a pending refund is next re-sent or re-read, how many times
-- it was, and the provider's last word (a refusal's reason, or why it is still open).
ALTER TABLE refunds
    ADD COLUMN attempts int NOT NULL DEFAULT 0,
    ADD COLUMN next_attempt_at timestamptz DEFAULT now() + interval '2 minutes',
    ADD COLUMN last_error text;
UPDATE refunds SET next_attempt_at = CASE WHEN status = 'pending' THEN now() END;
CREATE INDEX refunds_follow_up ON refunds (next_attempt_at) WHERE status = 'pending';
