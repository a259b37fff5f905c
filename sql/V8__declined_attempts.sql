-- A declined attempt on a checkout page that stays open (CloudPayments: the viewer
-- may try another card on the same order). The purchase stays pending; each
-- attempt and its reason are kept here, once per provider transaction.
CREATE TABLE declined_attempts (
    pay_system              text NOT NULL REFERENCES pay_systems (alias),
    provider_transaction_id text NOT NULL,
    payment_id              uuid NOT NULL REFERENCES payments (id),
    -- Our vocabulary (`insufficient_funds`), and the provider's own words.
    reason                  text NOT NULL,
    provider_reason         text,
    declined_at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (pay_system, provider_transaction_id)
);
CREATE INDEX declined_attempts_payment ON declined_attempts (payment_id);
