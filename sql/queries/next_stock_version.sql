-- The version a batch gives the stock rows it changes (sql/migrations/0006).
SELECT nextval('stock_versions')
