-- Room in each page of stock_move for the costing pass's updates (gateway/costing.py): a movement is inserted
-- uncosted and its cost and running state written in the same transaction, then again whenever an earlier
-- movement of its item changes. None of those columns is indexed, so with free space on the page the update
-- is a heap-only tuple: no new entry in any of the table's three indexes. Pages written before keep no room.
ALTER TABLE stock_move SET (fillfactor = 75);
