-- Stored first answers to writes sent with an Idempotency-Key header (kept 24 hours).

CREATE TABLE idempotency_key (
    tenant_id        integer NOT NULL REFERENCES tenant (id),
    key              text NOT NULL,
    request_hash     bytea NOT NULL,
    response_status  integer,          -- NULL while the first request is running
    response_body    bytea,
    created_at       timestamptz NOT NULL DEFAULT now(),
    completed_at     timestamptz,
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_key_age ON idempotency_key (created_at);
