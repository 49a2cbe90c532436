-- Webhooks (gateway/webhooks.py): per-tenant subscriptions and the deliveries made for them.
--
-- There is no outbox table of its own: change_log (0001) is the outbox. Every write already logs its changed
-- keys there in the same transaction as the change, so a subscription only keeps its position in that feed
-- per form, and the dispatcher turns what lies past it (below the tenant's feed cutoff) into deliveries.
-- The job queue that sends them is procrastinate's, whose schema `gateway migrate` applies beside these.

CREATE TABLE webhook_subscription (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   integer NOT NULL REFERENCES tenant (id),
    url         text NOT NULL CHECK (url ~ '^https?://' AND length(url) <= 2000),
    forms       text[] NOT NULL CHECK (cardinality(forms) > 0),  -- sync form names, or {*} for every form
    -- [{"secret": "whsec_...", "expires": null | epoch seconds}], newest first: during a rotation the older
    -- ones still sign until they expire, so receivers can switch over without losing a delivery.
    secrets     jsonb NOT NULL,
    active      boolean NOT NULL DEFAULT true,
    -- Position in the change feed per form: {"setCustomer": "xid.id.place", ...}.
    positions   jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_subscription_tenant ON webhook_subscription (tenant_id);

CREATE TABLE webhook_delivery (
    id                text PRIMARY KEY,  -- msg_..., the webhook-id header: the same on every retry
    seq               bigint GENERATED ALWAYS AS IDENTITY UNIQUE,  -- order of making, kept in sending
    tenant_id         integer NOT NULL REFERENCES tenant (id),
    subscription_id   bigint NOT NULL REFERENCES webhook_subscription (id) ON DELETE CASCADE,
    body              text NOT NULL,  -- sent byte for byte on every attempt (it is what is signed)
    changes           integer NOT NULL,
    status            text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'dead')),
    queued            boolean NOT NULL DEFAULT false,  -- a job to send it is in the queue
    attempts          integer NOT NULL DEFAULT 0,
    first_attempt_at  timestamptz,  -- the retry window (three days by default) counts from here
    last_attempt_at   timestamptz,
    last_status       integer,  -- the receiver's HTTP status, null when it could not be reached
    last_error        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    delivered_at      timestamptz
);
CREATE INDEX webhook_delivery_subscription ON webhook_delivery (subscription_id, seq);
CREATE INDEX webhook_delivery_tenant ON webhook_delivery (tenant_id, seq);
CREATE INDEX webhook_delivery_to_queue ON webhook_delivery (seq) WHERE status = 'pending' AND NOT queued;

-- Row security as 0019 gives every table with a tenant_id: the tenant's rows for the API (its admin endpoint),
-- every row for the owner, as whom the webhook worker and the command line connect.
DO $$
DECLARE
    t regclass;
BEGIN
    FOREACH t IN ARRAY ARRAY['webhook_subscription'::regclass, 'webhook_delivery'::regclass]
    LOOP
        EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY gateway_tenant ON %s USING (tenant_id = gateway_tenant())'
                       ' WITH CHECK (tenant_id = gateway_tenant())', t);
        EXECUTE format('CREATE POLICY gateway_maintenance ON %s TO %I USING (true) WITH CHECK (true)',
                       t, current_user);
    END LOOP;
END $$;

-- The age of the oldest delivery not yet through (0: none), across tenants, for GET /metrics (the API's role
-- sees one tenant's rows at most): one figure, no tenant's data.
CREATE FUNCTION gateway_webhook_outbox_lag() RETURNS double precision
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 FROM webhook_delivery
    WHERE status = 'pending'
$$;
REVOKE EXECUTE ON FUNCTION gateway_webhook_outbox_lag() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION gateway_webhook_outbox_lag() TO gateway_app;

CREATE INDEX webhook_delivery_pending ON webhook_delivery (created_at) WHERE status = 'pending';
