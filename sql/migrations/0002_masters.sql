-- Master catalogs. Every synced table leads with tenant_id, keeps deleted rows as tombstones and carries
-- the change stamp (change_xid, change_seq) that incremental pulls follow.

CREATE TABLE customer (
    tenant_id      integer NOT NULL REFERENCES tenant (id),
    customer_code  text NOT NULL,
    customer_name  text NOT NULL,
    other_name     text,
    sale_code      text,
    address        text,
    partner        text,
    group_code1    text,
    group_code2    text,
    group_code3    text,
    phone_number   text,
    tax_code       text,
    fax            text,
    email          text,
    bank_account   text,
    bank_name      text,
    branch_name    text,
    account_name   text,
    payment_term   text,
    status         text NOT NULL DEFAULT '1',
    suplier_yn     smallint NOT NULL DEFAULT 0,
    employee_yn    smallint NOT NULL DEFAULT 0,
    description    text,
    deleted        boolean NOT NULL DEFAULT false,
    change_seq     bigint NOT NULL,
    change_xid     xid8 NOT NULL,
    updated_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, customer_code)
);
CREATE INDEX customer_changes ON customer (tenant_id, change_xid, change_seq);
