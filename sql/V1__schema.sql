-- Billing schema. Money is integer minor units (kopecks) plus an ISO 4217 code.
-- Every constraint here carries an invariant of the design; the code relies on them
-- instead of re-checking in Rust.

CREATE TABLE pay_systems (
    alias       text PRIMARY KEY CHECK (alias IN ('yookassa', 'cloudpayments')),
    name        text NOT NULL,
    currencies  text[] NOT NULL,
    position    int NOT NULL DEFAULT 0,
    -- Operators can switch a provider off; it is listed only when also configured.
    enabled     boolean NOT NULL DEFAULT true
);

CREATE TABLE tariffs (
    id           uuid PRIMARY KEY,
    alias        text NOT NULL UNIQUE,
    name         text NOT NULL,
    description  text NOT NULL DEFAULT '',
    price_minor  bigint NOT NULL CHECK (price_minor > 0),
    currency     char(3) NOT NULL,
    period_count int NOT NULL CHECK (period_count BETWEEN 1 AND 1000),
    period_unit  text NOT NULL CHECK (period_unit IN ('day', 'month', 'year')),
    archived_at  timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE payment_methods (
    id                 uuid PRIMARY KEY,
    user_id            uuid NOT NULL,
    pay_system         text NOT NULL REFERENCES pay_systems (alias),
    -- YooKassa payment_method.id or a CloudPayments card token.
    provider_method_id text NOT NULL,
    title              text NOT NULL,
    usable             boolean NOT NULL DEFAULT true,
    unusable_reason    text,
    livemode           boolean NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (pay_system, provider_method_id)
);
CREATE INDEX payment_methods_user ON payment_methods (user_id);

CREATE TABLE subscriptions (
    id                   uuid PRIMARY KEY,
    user_id              uuid NOT NULL,
    tariff_id            uuid NOT NULL REFERENCES tariffs (id),
    pay_system           text NOT NULL REFERENCES pay_systems (alias),
    status               text NOT NULL CHECK (status IN ('active', 'past_due', 'canceled', 'expired')),
    -- The price and period the subscription was bought at: a tariff change never reprices it.
    price_minor          bigint NOT NULL CHECK (price_minor > 0),
    currency             char(3) NOT NULL,
    period_count         int NOT NULL,
    period_unit          text NOT NULL,
    current_period_start timestamptz NOT NULL,
    current_period_end   timestamptz NOT NULL CHECK (current_period_end > current_period_start),
    auto_renew           boolean NOT NULL,
    payment_method_id    uuid REFERENCES payment_methods (id),
    -- When the renewer should next charge (RENEW_BEFORE before the end, or a dunning retry).
    next_charge_at       timestamptz,
    -- Failed renewal attempts for the period that starts at current_period_end.
    renewal_attempts     int NOT NULL DEFAULT 0,
    past_due_since       timestamptz,
    livemode             boolean NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    ended_at             timestamptz
);
-- One live subscription per user.
CREATE UNIQUE INDEX subscriptions_one_live_per_user
    ON subscriptions (user_id) WHERE status IN ('active', 'past_due');
CREATE INDEX subscriptions_user_recent ON subscriptions (user_id, created_at DESC);
CREATE INDEX subscriptions_renewal_due
    ON subscriptions (next_charge_at) WHERE status IN ('active', 'past_due') AND auto_renew;
CREATE INDEX subscriptions_period_end
    ON subscriptions (current_period_end) WHERE status IN ('active', 'past_due');

CREATE TABLE payments (
    id                       uuid PRIMARY KEY,
    user_id                  uuid NOT NULL,
    tariff_id                uuid NOT NULL REFERENCES tariffs (id),
    -- Set from the start for renewals; for a purchase, once it activates a subscription.
    subscription_id          uuid REFERENCES subscriptions (id),
    pay_system               text NOT NULL REFERENCES pay_systems (alias),
    kind                     text NOT NULL CHECK (kind IN ('purchase', 'renewal')),
    status                   text NOT NULL CHECK (status IN (
        'pending', 'waiting_for_capture', 'succeeded', 'canceled', 'failed',
        'partially_refunded', 'refunded')),
    amount_minor             bigint NOT NULL CHECK (amount_minor > 0),
    currency                 char(3) NOT NULL,
    refunded_minor           bigint NOT NULL DEFAULT 0 CHECK (refunded_minor >= 0 AND refunded_minor <= amount_minor),
    renew                    boolean NOT NULL,
    return_url               text,
    description              text NOT NULL,
    -- Persisted before the provider call, re-sent on every retry of the same create.
    provider_idempotence_key text NOT NULL,
    provider_payment_id      text,
    confirmation_url         text,
    payment_method_id        uuid REFERENCES payment_methods (id),
    -- Renewals: the start of the period this payment pays for, and the attempt number.
    period_start             timestamptz,
    attempt                  int NOT NULL DEFAULT 0,
    cancellation_party       text,
    cancellation_reason      text,
    captured_at              timestamptz,
    -- Provider data that disagrees with our row (amount, currency, shop, test flag): grants nothing.
    review_reason            text,
    livemode                 boolean NOT NULL,
    -- Reconciler bookkeeping: per-payment backoff and a lease for whichever replica checks it.
    next_check_at            timestamptz,
    check_attempts           int NOT NULL DEFAULT 0,
    lease_until              timestamptz,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now(),
    CHECK (kind = 'purchase' OR (subscription_id IS NOT NULL AND period_start IS NOT NULL))
);
-- One external id per provider.
CREATE UNIQUE INDEX payments_provider_id ON payments (pay_system, provider_payment_id)
    WHERE provider_payment_id IS NOT NULL;
-- At most one pending-or-succeeded renewal per (subscription, period).
CREATE UNIQUE INDEX payments_one_renewal_per_period ON payments (subscription_id, period_start)
    WHERE kind = 'renewal' AND status IN ('pending', 'waiting_for_capture', 'succeeded');
CREATE INDEX payments_user_recent ON payments (user_id, created_at DESC, id DESC);
CREATE INDEX payments_open ON payments (next_check_at)
    WHERE status IN ('pending', 'waiting_for_capture') AND review_reason IS NULL;
CREATE INDEX payments_subscription ON payments (subscription_id) WHERE subscription_id IS NOT NULL;

CREATE TABLE refunds (
    id                       uuid PRIMARY KEY,
    payment_id               uuid NOT NULL REFERENCES payments (id),
    pay_system               text NOT NULL REFERENCES pay_systems (alias),
    amount_minor             bigint NOT NULL CHECK (amount_minor > 0),
    currency                 char(3) NOT NULL,
    status                   text NOT NULL CHECK (status IN ('pending', 'succeeded', 'canceled')),
    reason                   text NOT NULL,
    -- admin: through our API; provider: made in the provider's dashboard; system: automatic.
    initiated_by             text NOT NULL CHECK (initiated_by IN ('admin', 'provider', 'system')),
    provider_idempotence_key text NOT NULL,
    provider_refund_id       text,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX refunds_provider_id ON refunds (pay_system, provider_refund_id)
    WHERE provider_refund_id IS NOT NULL;
CREATE INDEX refunds_payment ON refunds (payment_id);

-- Idempotency-Key of POST requests, scoped to the user, kept 24 h.
CREATE TABLE idempotency_keys (
    user_id        uuid NOT NULL,
    scope          text NOT NULL,
    key            text NOT NULL,
    request_hash   bytea NOT NULL,
    -- While a request holds the key; a crashed request's lease runs out and the next one resumes.
    locked_until   timestamptz,
    resource_id    uuid,
    response_code  int,
    response_body  jsonb,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, scope, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

CREATE TABLE webhook_inbox (
    id               uuid PRIMARY KEY,
    provider         text NOT NULL,
    event            text NOT NULL,
    object_id        text NOT NULL,
    -- Standard Webhooks id of an ops replay; such rows are keyed by it instead.
    ops_webhook_id   text,
    status           text NOT NULL CHECK (status IN ('received', 'processed', 'failed', 'ignored')),
    -- Raw notification (personal data): purged after WEBHOOK_BODY_RETENTION, hash kept.
    body             bytea,
    body_sha256      bytea NOT NULL,
    content_type     text,
    source_ip        inet,
    deliveries       int NOT NULL DEFAULT 1,
    attempts         int NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz,
    outcome          text,
    last_error       text,
    received_at      timestamptz NOT NULL DEFAULT now(),
    last_received_at timestamptz NOT NULL DEFAULT now(),
    processed_at     timestamptz,
    body_purged_at   timestamptz
);
CREATE UNIQUE INDEX webhook_inbox_object ON webhook_inbox (provider, event, object_id)
    WHERE ops_webhook_id IS NULL;
CREATE UNIQUE INDEX webhook_inbox_ops_id ON webhook_inbox (ops_webhook_id)
    WHERE ops_webhook_id IS NOT NULL;
CREATE INDEX webhook_inbox_retry ON webhook_inbox (next_attempt_at) WHERE status = 'received';
CREATE INDEX webhook_inbox_listing ON webhook_inbox (received_at DESC);

-- Event seq: taken under the subscription's row lock, so it increases per subscription.
CREATE SEQUENCE event_seq;

CREATE TABLE outbox (
    -- Publication order. Changes of one subscription are serialised by its row lock,
    -- so for one subscription this is also commit order.
    id           bigserial PRIMARY KEY,
    event_id     uuid NOT NULL UNIQUE,
    event_type   text NOT NULL,
    payload      jsonb NOT NULL,
    occurred_at  timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    sent_at      timestamptz,
    attempts     int NOT NULL DEFAULT 0,
    last_error   text
);
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;
CREATE INDEX outbox_sent ON outbox (sent_at) WHERE sent_at IS NOT NULL;

-- Wakes the relay as soon as an event commits.
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('billing_outbox', '');
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
