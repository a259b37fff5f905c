-- Every serving process caches the active tariff list; a committed change to
-- `tariffs` tells them all (http::tariff_cache LISTENs on this channel).
CREATE FUNCTION notify_tariffs_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tariffs_changed', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER tariffs_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tariffs
    FOR EACH STATEMENT EXECUTE FUNCTION notify_tariffs_changed();
