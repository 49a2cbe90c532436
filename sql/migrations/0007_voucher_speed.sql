-- Stored vouchers looked up by key: the voucher id first, then the tenant. Without statistics the planner
-- rates voucher_by_date (tenant_id, form, voucher_date) as good as the primary key for one key and may read
-- every voucher of the tenant's form for each key it looks up; a lookup that names the voucher id and the
-- tenant only (the form is checked after it, see gateway/posting.py STORED_VOUCHERS) has this index as its
-- one selective path.
CREATE INDEX voucher_by_key ON voucher (voucher_id, tenant_id);
