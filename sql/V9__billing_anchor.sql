-- The billing anchor (Stripe's billing_cycle_anchor): every period end is counted
-- from it, so a subscription bought on 31 January renews on 28 February and then
-- on 31 March, not on the 28th forever. It is the first period's start, and moves
-- only when a subscription starts over (renewed after expiry, extended after its
-- end, a tariff change).
ALTER TABLE subscriptions ADD COLUMN billing_anchor timestamptz;

-- Existing subscriptions: the start of the first period a payment of theirs
-- recorded, when the current period ends on that anchor's dates (n periods
-- later, counted in UTC like the service, or within the 3 days a short month
-- takes off); else (a subscription that started over at another time, a day
-- tariff) the current period's start.
UPDATE subscriptions s
   SET billing_anchor = coalesce(
       (SELECT f.first FROM (
            SELECT min(p.period_start) AS first FROM payments p
             WHERE p.subscription_id = s.id AND p.period_start IS NOT NULL
               AND p.period_start <= s.current_period_start) f
         WHERE s.period_unit IN ('month', 'year')
           AND EXISTS (
               SELECT 1 FROM generate_series(1, 1200) k
                WHERE ((f.first AT TIME ZONE 'UTC')
                       + make_interval(months => k * s.period_count
                                       * CASE s.period_unit WHEN 'year' THEN 12 ELSE 1 END))
                      AT TIME ZONE 'UTC'
                      BETWEEN s.current_period_end AND s.current_period_end + interval '3 days')),
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
