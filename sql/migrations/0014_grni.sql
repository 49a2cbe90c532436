-- Goods received not invoiced: a purchase invoice line may name the goods receipt line it invoices
-- (ReceiptId, ReceiptRefNumber). Such a line relieves the receipt's liability instead of bringing the goods
-- into stock a second time (gateway/grni.py).

ALTER TABLE voucher_line ADD COLUMN receipt_id text, ADD COLUMN receipt_line integer;

-- Lines found by a cited key, that key first: the receipt line an invoice line cites (once per citing line when
-- the invoice posts), and the invoice lines citing a receipt (the checks, a receipt's cancellation or
-- replacement, the open receipts at a date). The look-ups name the tenant in a form no index serves
-- (gateway/grni.py), so that these are their only paths: on a never-analysed table the planner rates any index
-- leading with tenant_id (voucher_line_item) as good for one line, and then reads every line of the tenant for
-- each look-up.
CREATE INDEX voucher_line_receipt_key ON voucher_line (voucher_id, line_no, tenant_id) WHERE form = 'setReceipt';
CREATE INDEX voucher_line_receipt ON voucher_line (receipt_id, receipt_line, tenant_id) WHERE receipt_id IS NOT NULL;
