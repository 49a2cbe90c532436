-- Master catalogs. Every synced table leads with tenant_id, keeps deleted rows as tombstones (deleted) and
-- carries its change stamp (change_seq, updated_at); the keys of every write also go to change_log.
-- tenant_id has no foreign key here: the check would run once per inserted row (measured: about a third of
-- insert throughput), and the id only ever comes from an authenticated user's tenant, and tenants are
-- never deleted.

CREATE TABLE customer (
    tenant_id      integer NOT NULL,
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
    updated_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, customer_code)
);

-- setSupplier / getSupplier
CREATE TABLE supplier (
    tenant_id      integer NOT NULL,
    supplier_code  text NOT NULL,
    supplier_name  text NOT NULL,
    other_name     text,
    address        text,
    phone_number   text,
    tax_code       text,
    email          text,
    bank_account   text,
    bank_name      text,
    payment_term   text,
    status         text NOT NULL DEFAULT '1',
    description    text,
    deleted        boolean NOT NULL DEFAULT false,
    change_seq     bigint NOT NULL,
    updated_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, supplier_code)
);

-- setItem / getItem
CREATE TABLE item (
    tenant_id      integer NOT NULL,
    item_code      text NOT NULL,
    item_name      text NOT NULL,
    other_name     text,
    uom            text,
    item_type      text NOT NULL,
    item_group1    text,
    item_group2    text,
    item_group3    text,
    status         text NOT NULL DEFAULT '1',
    barcode        text,
    price          numeric,
    stock_tracked  smallint NOT NULL DEFAULT 1,
    reorder_level  numeric,
    deleted        boolean NOT NULL DEFAULT false,
    change_seq     bigint NOT NULL,
    updated_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, item_code)
);

-- setSite / getSite (also setWarehouse, getWarehouse)
CREATE TABLE site (
    tenant_id      integer NOT NULL,
    site_code      text NOT NULL,
    site_name      text NOT NULL,
    other_name     text,
    address        text,
    group_code     text,
    agent_yn       smallint NOT NULL DEFAULT 0,
    note           text,
    status         text NOT NULL DEFAULT '1',
    deleted        boolean NOT NULL DEFAULT false,
    change_seq     bigint NOT NULL,
    updated_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, site_code)
);

-- setUnit / getUnit
CREATE TABLE unit (
    tenant_id      integer NOT NULL,
    uom_code       text NOT NULL,
    uom_name       text NOT NULL,
    other_name     text,
    status         text NOT NULL DEFAULT '1',
    deleted        boolean NOT NULL DEFAULT false,
    change_seq     bigint NOT NULL,
    updated_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, uom_code)
);

-- UnitConversion / getUnitConversion (also setUomConversion, setUnitConversion, getUomConversion)
CREATE TABLE unit_conversion (
    tenant_id      integer NOT NULL,
    item_code      text NOT NULL,
    uom            text NOT NULL,
    coefficient    numeric NOT NULL,
    status         text NOT NULL DEFAULT '1',
    deleted        boolean NOT NULL DEFAULT false,
    change_seq     bigint NOT NULL,
    updated_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, item_code, uom)
);

-- setAccount / getAccount
CREATE TABLE account (
    tenant_id      integer NOT NULL,
    account_code   text NOT NULL,
    account_name   text NOT NULL,
    other_name     text,
    account_type   text NOT NULL,
    parent_code    text,
    status         text NOT NULL DEFAULT '1',
    deleted        boolean NOT NULL DEFAULT false,
    change_seq     bigint NOT NULL,
    updated_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, account_code)
);

-- setDepartment / getDepartment
CREATE TABLE department (
    tenant_id      integer NOT NULL,
    dept_code      text NOT NULL,
    dept_name      text NOT NULL,
    other_name     text,
    address        text,
    phone_number   text,
    note           text,
    status         text NOT NULL DEFAULT '1',
    deleted        boolean NOT NULL DEFAULT false,
    change_seq     bigint NOT NULL,
    updated_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, dept_code)
);

-- setEmployee / getEmployee
CREATE TABLE employee (
    tenant_id      integer NOT NULL,
    employee_code  text NOT NULL,
    employee_name  text NOT NULL,
    other_name     text,
    dept_code      text,
    position       text,
    phone_number   text,
    email          text,
    status         text NOT NULL DEFAULT '1',
    deleted        boolean NOT NULL DEFAULT false,
    change_seq     bigint NOT NULL,
    updated_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, employee_code)
);

-- setJob / getJob (also setCase, getCase)
CREATE TABLE job (
    tenant_id      integer NOT NULL,
    job_code       text NOT NULL,
    job_name       text NOT NULL,
    other_name     text,
    note           text,
    status         text NOT NULL DEFAULT '1',
    customer_code  text,
    from_date      date,
    to_date        date,
    budget         numeric,
    job_status     text NOT NULL DEFAULT 'open',
    deleted        boolean NOT NULL DEFAULT false,
    change_seq     bigint NOT NULL,
    updated_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, job_code)
);

-- setContract / getContract
CREATE TABLE contract (
    tenant_id      integer NOT NULL,
    contract_code  text NOT NULL,
    contract_name  text NOT NULL,
    other_name     text,
    contract_no    text,
    signed_date    date,
    from_date      date,
    to_date        date,
    total_amount   numeric,
    currency       text NOT NULL DEFAULT 'VND',
    note           text,
    status         text NOT NULL DEFAULT '1',
    deleted        boolean NOT NULL DEFAULT false,
    change_seq     bigint NOT NULL,
    updated_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, contract_code)
);

-- setExpense / getExpense
CREATE TABLE expense (
    tenant_id      integer NOT NULL,
    expense_code   text NOT NULL,
    expense_name   text NOT NULL,
    other_name     text,
    dept_code      text,
    note           text,
    status         text NOT NULL DEFAULT '1',
    deleted        boolean NOT NULL DEFAULT false,
    change_seq     bigint NOT NULL,
    updated_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, expense_code)
);

-- setCurrency / getCurrency
CREATE TABLE currency (
    tenant_id      integer NOT NULL,
    currency_code  text NOT NULL,
    currency_name  text NOT NULL,
    decimal_places smallint NOT NULL DEFAULT 2,
    status         text NOT NULL DEFAULT '1',
    deleted        boolean NOT NULL DEFAULT false,
    change_seq     bigint NOT NULL,
    updated_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, currency_code)
);

-- setTaxCode / getTaxCode
CREATE TABLE tax_code (
    tenant_id      integer NOT NULL,
    tax_code       text NOT NULL,
    tax_name       text NOT NULL,
    tax_rate       numeric NOT NULL,
    status         text NOT NULL DEFAULT '1',
    deleted        boolean NOT NULL DEFAULT false,
    change_seq     bigint NOT NULL,
    updated_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, tax_code)
);
