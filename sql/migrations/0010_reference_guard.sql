-- A master record that live vouchers use cannot be deleted (gateway/references.py). Every code a voucher
-- refers to is kept in a typed column, and each such column has an index from the code back to the
-- vouchers, so that the check before a delete is a keyed lookup on any table, analysed or not.

-- Line codes that were kept only in the document until now.
ALTER TABLE voucher_line ADD COLUMN tax_code text;        -- sales and purchase lines
ALTER TABLE voucher_line ADD COLUMN customer_code text;   -- journal lines
UPDATE voucher_line l SET tax_code = d.line->>'TaxCode', customer_code = d.line->>'CustomerCode'
FROM voucher v CROSS JOIN LATERAL jsonb_array_elements(v.document->'detail') AS d(line)
WHERE v.tenant_id = l.tenant_id AND v.form = l.form AND v.voucher_id = l.voucher_id
  AND (d.line->>'RefNumber')::integer = l.line_no
  AND (d.line ? 'TaxCode' OR d.line ? 'CustomerCode');

-- Partial indexes: most lines leave most of these codes empty, and an empty code costs no index entry.
CREATE INDEX voucher_partner_ref ON voucher (tenant_id, partner_code) WHERE partner_code IS NOT NULL AND NOT deleted;
CREATE INDEX voucher_currency_ref ON voucher (tenant_id, currency) WHERE NOT deleted;
CREATE INDEX voucher_line_site_ref ON voucher_line (tenant_id, site_code) WHERE site_code IS NOT NULL;
CREATE INDEX voucher_line_to_site_ref ON voucher_line (tenant_id, to_site_code) WHERE to_site_code IS NOT NULL;
CREATE INDEX voucher_line_tax_ref ON voucher_line (tenant_id, tax_code) WHERE tax_code IS NOT NULL;
CREATE INDEX voucher_line_customer_ref ON voucher_line (tenant_id, customer_code) WHERE customer_code IS NOT NULL;
CREATE INDEX voucher_line_account_ref ON voucher_line (tenant_id, account_code) WHERE account_code IS NOT NULL;
CREATE INDEX voucher_line_debit_ref ON voucher_line (tenant_id, debit_account) WHERE debit_account IS NOT NULL;
CREATE INDEX voucher_line_credit_ref ON voucher_line (tenant_id, credit_account) WHERE credit_account IS NOT NULL;
CREATE INDEX voucher_line_job_ref ON voucher_line (tenant_id, job_code) WHERE job_code IS NOT NULL;
CREATE INDEX voucher_line_dept_ref ON voucher_line (tenant_id, dept_code) WHERE dept_code IS NOT NULL;
CREATE INDEX voucher_line_contract_ref ON voucher_line (tenant_id, contract_code) WHERE contract_code IS NOT NULL;
CREATE INDEX voucher_line_expense_ref ON voucher_line (tenant_id, expense_code) WHERE expense_code IS NOT NULL;
-- An account named by one of the tenant's posting roles is in use too.
CREATE INDEX posting_account_ref ON posting_account (tenant_id, account_code);
