-- Cost of sales: perpetual inventory at moving weighted average cost per item and site (gateway/costing.py).
-- Each stock movement keeps how it is valued, its place within its day, its cost and the running quantity and
-- value of its item at its site after it; the ledger keeps the cost entries apart from the posting rules'.

-- What becomes of a movement of stock that would leave less than nothing on hand is taken: 'refuse' (the voucher is
-- refused, naming item, site, date, on hand and requested) or 'allow' (tills that sell before goods arrive).
ALTER TABLE tenant ADD COLUMN negative_stock text NOT NULL DEFAULT 'refuse'
    CHECK (negative_stock IN ('refuse', 'allow'));

-- The sales invoice line a sale return's line gives back (SaleInvId, SaleInvRefNumber): returned at its cost.
ALTER TABLE voucher_line ADD COLUMN sale_invoice_id text;
ALTER TABLE voucher_line ADD COLUMN sale_invoice_line integer;
UPDATE voucher_line l SET sale_invoice_id = d.line->>'SaleInvId', sale_invoice_line = (d.line->>'SaleInvRefNumber')::integer
FROM voucher v CROSS JOIN LATERAL jsonb_array_elements(v.document->'detail') AS d(line)
WHERE v.tenant_id = l.tenant_id AND v.form = l.form AND v.voucher_id = l.voucher_id AND v.form = 'setSaleReturn'
  AND (d.line->>'RefNumber')::integer = l.line_no AND d.line ? 'SaleInvId';

-- basis: how the movement is valued. 'priced': its value_in (an inflow with a price); 'average': at the
-- average of its item and site at that moment (outflows, inflows without a price); 'sale': a return at the
-- unit cost of the sale line it cites (ref_voucher_id, ref_line); 'transfer': a transfer's out (at the
-- average) or in (at exactly its out's cost, the out of the same voucher line); 'value': a value without
-- quantity (a price difference) added to the stock's value; a movement of no quantity is valued so whatever
-- its basis says.
-- day_order: its place among the item's movements of its day (0 priced inflows, 1 transfers out, 2 transfers
-- in, 3 outflows, 4 returns and other derived inflows); then form, voucher and move_no.
-- counter: the posting role the cost entry's other side goes to (cost_of_sales for sales and issues; NULL:
-- no cost entry, as for a transfer, whose value stays in inventory).
-- cost: the movement's value in the base currency, rounded to its decimals; writeoff: value sent to cost of
-- sales because no quantity was left to carry it (positive: out of inventory). NULL until costed.
ALTER TABLE stock_move
    ADD COLUMN line_no integer,
    ADD COLUMN day_order smallint NOT NULL DEFAULT 4,
    ADD COLUMN basis text NOT NULL DEFAULT 'average'
        CHECK (basis IN ('priced', 'average', 'sale', 'transfer', 'value')),
    ADD COLUMN counter text,
    ADD COLUMN ref_voucher_id text,
    ADD COLUMN ref_line integer,
    ADD COLUMN job_code text,
    ADD COLUMN dept_code text,
    ADD COLUMN cost numeric,
    ADD COLUMN writeoff numeric,
    ADD COLUMN qty_after numeric,
    ADD COLUMN value_after numeric;

-- Movements posted before costing: valued by the rules their forms have now. Each rule moved the voucher's
-- lines in line order, one movement per line of a stock-tracked item with a site and a quantity: the k-th
-- movement of a rule (the k-th out, or the k-th in) is the k-th such line, whose RefNumber it takes (a
-- transfer's in and out are paired by it, a return can find the sale line it cites) and, for a return, the
-- sale line it cites. Where the lines do not match (an item's tracking changed since), the rank itself.
WITH moved AS (
    SELECT l.tenant_id, l.form, l.voucher_id, l.line_no, l.sale_invoice_id, l.sale_invoice_line,
           row_number() OVER (PARTITION BY l.tenant_id, l.form, l.voucher_id ORDER BY l.line_no) AS k
    FROM voucher_line l
    JOIN item i ON i.tenant_id = l.tenant_id AND i.item_code = l.item_code AND i.stock_tracked = 1
    WHERE l.site_code IS NOT NULL AND l.quantity <> 0
),
ranked AS (
    SELECT tenant_id, form, voucher_id, move_no,
           row_number() OVER (PARTITION BY tenant_id, form, voucher_id, qty_out <> 0 ORDER BY move_no) AS k
    FROM stock_move
)
UPDATE stock_move m SET
    basis = CASE WHEN m.form = 'setStockTransfer' THEN 'transfer'
                 WHEN m.form = 'setSaleReturn' AND d.sale_invoice_id IS NOT NULL THEN 'sale'
                 WHEN m.qty_out = 0 AND COALESCE(m.value_in, 0) <> 0 THEN 'priced'
                 ELSE 'average' END,
    day_order = CASE WHEN m.form = 'setStockTransfer' THEN (CASE WHEN m.qty_out <> 0 THEN 1 ELSE 2 END)
                     WHEN m.qty_out <> 0 THEN 3
                     WHEN COALESCE(m.value_in, 0) <> 0 THEN 0
                     ELSE 4 END,
    counter = CASE WHEN m.form IN ('setSaleInvoice', 'setIssue', 'setSaleReturn') THEN 'cost_of_sales'
                   WHEN m.form = 'setStockTransfer' THEN NULL
                   WHEN m.qty_out = 0 AND COALESCE(m.value_in, 0) = 0 THEN 'inventory_surplus' END,
    line_no = COALESCE(d.line_no, r.k),
    ref_voucher_id = CASE WHEN m.form = 'setSaleReturn' THEN d.sale_invoice_id END,
    ref_line = CASE WHEN m.form = 'setSaleReturn' THEN d.sale_invoice_line END
FROM ranked r
LEFT JOIN moved d ON d.tenant_id = r.tenant_id AND d.form = r.form AND d.voucher_id = r.voucher_id AND d.k = r.k
WHERE r.tenant_id = m.tenant_id AND r.form = m.form AND r.voucher_id = m.voucher_id AND r.move_no = m.move_no;

-- An item's movements in costing order, across its sites: the recosting reads them from the first position a
-- write changed. Per site, the same order gives the state just before that position (the last movement before
-- it); the index also serves the stock report's item lookups, as stock_move_item did.
CREATE INDEX stock_move_order ON stock_move (tenant_id, item_code, move_date, day_order, form, voucher_id, move_no);
CREATE INDEX stock_move_site_order
    ON stock_move (tenant_id, item_code, site_code, move_date, day_order, form, voucher_id, move_no);
DROP INDEX stock_move_item;

-- Entries of the posting rules ('post') and of costing ('cost'), numbered apart: the cost entries of a voucher
-- are rewritten when a movement's cost changes (a back-dated voucher), the rules' entries are not.
ALTER TABLE gl_entry ADD COLUMN source text NOT NULL DEFAULT 'post';
ALTER TABLE gl_entry DROP CONSTRAINT gl_entry_pkey;
ALTER TABLE gl_entry ADD PRIMARY KEY (tenant_id, form, voucher_id, source, entry_no);
