-- Vouchers (SyncVoucher): one header row per document, its detail lines, and the tenant's locked period.
-- The document as sent (defaults applied) is kept whole in `document` so that GetData gives back exactly
-- what was synced; the typed columns serve checks, filters and, later, postings and reports.

ALTER TABLE tenant ADD COLUMN locked_until date;

CREATE TABLE voucher (
    tenant_id       integer NOT NULL,
    form            text NOT NULL,          -- the form's canonical name, e.g. setSaleInvoice
    voucher_id      text NOT NULL,          -- the sender's id of the document
    voucher_number  text,
    voucher_date    date NOT NULL,
    partner_code    text,
    currency        text NOT NULL,
    exchange_rate   numeric NOT NULL,
    total_amount    numeric,
    description     text,
    document        jsonb NOT NULL,
    deleted         boolean NOT NULL DEFAULT false,
    change_seq      bigint NOT NULL,
    updated_at      timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, form, voucher_id)
);
CREATE INDEX voucher_by_date ON voucher (tenant_id, form, voucher_date);

CREATE TABLE voucher_line (
    tenant_id       integer NOT NULL,
    form            text NOT NULL,
    voucher_id      text NOT NULL,
    line_no         integer NOT NULL,       -- RefNumber
    item_code       text,
    uom             text,
    site_code       text,
    to_site_code    text,                   -- stock transfers: the receiving site
    quantity        numeric,
    unit_price      numeric,
    amount          numeric,
    discount        numeric,
    tax_rate        numeric,
    tax_amount      numeric,
    total_amount    numeric,
    account_code    text,
    debit_account   text,
    credit_account  text,
    debit           numeric,
    credit          numeric,
    job_code        text,
    dept_code       text,
    contract_code   text,
    expense_code    text,
    PRIMARY KEY (tenant_id, form, voucher_id, line_no)
);
CREATE INDEX voucher_line_item ON voucher_line (tenant_id, item_code);

-- Voucher numbers the server assigns when a voucher comes without one (per tenant and form).
CREATE TABLE voucher_counter (
    tenant_id    integer NOT NULL,
    form         text NOT NULL,
    last_number  bigint NOT NULL,
    PRIMARY KEY (tenant_id, form)
);
