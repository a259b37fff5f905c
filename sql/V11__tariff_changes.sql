-- Issue 15, part 3: a viewer changes tariff.
-- `now` is a payment of its own kind, `change`: the new tariff's price minus the
-- unused part of what the viewer paid. Its terms are kept beside it in
-- `tariff_changes`, for the settle that applies them (only to the subscription
-- they were priced on, while its period still ends where it did).
-- `period_end` is kept on the subscription until its next renewal charges the
-- scheduled tariff.
ALTER TABLE payments DROP CONSTRAINT payments_kind_check;
ALTER TABLE payments ADD CONSTRAINT payments_kind_check
    CHECK (kind IN ('purchase', 'renewal', 'change'));
-- Only a renewal is charged for a known subscription and period from the start;
-- a change names its subscription in tariff_changes and records its period when paid.
ALTER TABLE payments DROP CONSTRAINT payments_check1;
ALTER TABLE payments ADD CONSTRAINT payments_renewal_has_period
    CHECK (kind <> 'renewal' OR (subscription_id IS NOT NULL AND period_start IS NOT NULL));

CREATE TABLE tariff_changes (
    payment_id      uuid PRIMARY KEY REFERENCES payments (id),
    subscription_id uuid NOT NULL REFERENCES subscriptions (id),
    from_tariff_id  uuid NOT NULL REFERENCES tariffs (id),
    -- The unused part of what was paid (minor units of the payment's currency):
    -- the payment charges the new tariff's price minus it.
    credit_minor    bigint NOT NULL CHECK (credit_minor >= 0),
    -- The subscription's period end the credit was computed on.
    credited_until  timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tariff_changes_subscription ON tariff_changes (subscription_id);

ALTER TABLE subscriptions ADD COLUMN scheduled_tariff_id uuid REFERENCES tariffs (id);
