-- Settlement of invoices (gateway/settlement.py): each allocation row also records what it settles in the
-- invoice's currency and, in the base currency, what it takes off the control account (receivable or
-- payable) at the invoice's book rate, so that an invoice settled in full leaves exactly 0 there. Sale
-- returns that cite an invoice net against it through rows of their own (form setSaleReturn), one per
-- citing line, with the invoice line and the quantity returned.

ALTER TABLE voucher_allocation ADD COLUMN invoice_amount numeric;  -- in the invoice's currency
ALTER TABLE voucher_allocation ADD COLUMN base_amount numeric;     -- in the base currency, at the book rate
ALTER TABLE voucher_allocation ADD COLUMN invoice_line integer;    -- returns: the invoice line (RefNumber)
ALTER TABLE voucher_allocation ADD COLUMN quantity numeric;        -- returns: the quantity returned

-- Rows written before: the payment was in the invoice's currency, settled at the invoice's rate.
UPDATE voucher_allocation a SET invoice_amount = a.amount, base_amount = a.amount * v.exchange_rate
FROM voucher v
WHERE v.tenant_id = a.tenant_id AND v.form = a.invoice_form AND v.voucher_id = a.invoice_id;
UPDATE voucher_allocation SET invoice_amount = amount, base_amount = 0 WHERE invoice_amount IS NULL;
