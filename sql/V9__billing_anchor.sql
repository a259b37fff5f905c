-- The billing anchor (Stripe's billing_cycle_anchor): every period end is counted
-- from it, so a subscription bought on 31 January renews on 28 February and then
-- on 31 March, not on the 28th forever. It is the first period's start, and moves
-- only when a subscription starts over (renewed after expiry, extended after its
-- end, a tariff change).
ALTER TABLE subscriptions ADD COLUMN billing_anchor timestamptz;

-- Existing subscriptions: the start of the first period a payment of theirs
-- recorded, else the current period's start.
UPDATE subscriptions s
   SET billing_anchor = coalesce(
       (SELECT min(p.period_start) FROM payments p
         WHERE p.subscription_id = s.id AND p.period_start IS NOT NULL
           AND p.period_start <= s.current_period_start),
       s.current_period_start);

-- A row inserted without one (a seed, a bench, a hand-written fix) starts its grid
-- at its first period.
CREATE FUNCTION subscriptions_default_anchor() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.billing_anchor := coalesce(NEW.billing_anchor, NEW.current_period_start);
    RETURN NEW;
END
$$;
CREATE TRIGGER subscriptions_default_anchor
    BEFORE INSERT ON subscriptions
    FOR EACH ROW EXECUTE FUNCTION subscriptions_default_anchor();

ALTER TABLE subscriptions ALTER COLUMN billing_anchor SET NOT NULL;
