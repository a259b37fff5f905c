-- What a tariff change paid now credited, payment by payment (the review of
-- part 3): that part of a payment bought the new tariff, so it can no longer be
-- refunded, and a refund of it between the pricing and the payment makes the
-- change stale (it is refunded instead of applied).
CREATE TABLE tariff_change_credits (
    change_payment_id   uuid NOT NULL REFERENCES payments (id),
    credited_payment_id uuid NOT NULL REFERENCES payments (id),
    credit_minor        bigint NOT NULL CHECK (credit_minor >= 0),
    -- What the credited payment's refunds not canceled added up to at the pricing.
    refunded_minor      bigint NOT NULL,
    -- Counted in the credited payment's `credited_minor` (the change took over and
    -- was not refunded in full since).
    spent               boolean NOT NULL DEFAULT false,
    PRIMARY KEY (change_payment_id, credited_payment_id)
);

-- The part of a payment a tariff change used as credit: not refundable.
ALTER TABLE payments ADD COLUMN credited_minor bigint NOT NULL DEFAULT 0
    CHECK (credited_minor >= 0 AND credited_minor <= amount_minor);
