-- The audit log read by time (the admin page, gateway/admin.py): a tenant's write requests of the last hour,
-- minute by minute, and each user's last login. The index 0017 gives (tenant_id, id) pages by position; a
-- time range over it would read every row of the tenant, and the BRIN index on `at` every tenant's rows.
CREATE INDEX audit_log_tenant_at ON audit_log (tenant_id, at);
-- Logins are a small share of the rows: a partial index finds a user's last one in one probe, and costs
-- nothing to the writes.
CREATE INDEX audit_log_last_login ON audit_log (tenant_id, username, at) WHERE kind = 'login';
