-- What vouchers post: general-ledger entries and stock movements (rewritten with the voucher, in the same
-- transaction), payment allocations to invoices, and the accounts each tenant posts to by role.

CREATE TABLE posting_account (
    tenant_id     integer NOT NULL REFERENCES tenant (id),
    role          text NOT NULL,          -- receivable, revenue, vat_output, ... (see gateway/posting.py)
    account_code  text NOT NULL,
    PRIMARY KEY (tenant_id, role)
);

CREATE TABLE gl_entry (
    tenant_id     integer NOT NULL,
    form          text NOT NULL,
    voucher_id    text NOT NULL,
    entry_no      integer NOT NULL,
    entry_date    date NOT NULL,
    account_code  text NOT NULL,
    debit         numeric NOT NULL DEFAULT 0,   -- in the base currency (amount x exchange rate)
    credit        numeric NOT NULL DEFAULT 0,
    partner_code  text,
    job_code      text,
    dept_code     text,
    PRIMARY KEY (tenant_id, form, voucher_id, entry_no)
);
CREATE INDEX gl_entry_account ON gl_entry (tenant_id, account_code, entry_date);

CREATE TABLE stock_move (
    tenant_id     integer NOT NULL,
    form          text NOT NULL,
    voucher_id    text NOT NULL,
    move_no       integer NOT NULL,
    move_date     date NOT NULL,
    item_code     text NOT NULL,
    site_code     text NOT NULL,
    qty_in        numeric NOT NULL DEFAULT 0,
    qty_out       numeric NOT NULL DEFAULT 0,
    value_in      numeric,                      -- cost of an inflow with a price (base currency); NULL otherwise
    PRIMARY KEY (tenant_id, form, voucher_id, move_no)
);
CREATE INDEX stock_move_item ON stock_move (tenant_id, item_code, site_code, move_date);

CREATE TABLE voucher_allocation (
    tenant_id     integer NOT NULL,
    form          text NOT NULL,                -- the paying voucher's form (setCashReceipt, ...)
    voucher_id    text NOT NULL,
    seq           integer NOT NULL,
    invoice_form  text NOT NULL,                -- the invoice's form (setSaleInvoice, ...)
    invoice_id    text NOT NULL,
    amount        numeric NOT NULL,
    PRIMARY KEY (tenant_id, form, voucher_id, seq)
);
CREATE INDEX voucher_allocation_invoice ON voucher_allocation (tenant_id, invoice_form, invoice_id);
