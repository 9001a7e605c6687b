-- Stock versions come from one sequence (docs/SPEC.md section 8, as it stood then; 0007 replaces this design). A
-- batch draws a number when it begins and every stock row it changes takes
-- GREATEST(version + 1, number): the number itself, unless a batch that drew
-- a larger one changed the row first. So the batch knows the new versions of
-- its stock rows before it locks them, and can invalidate their cache keys
-- before, not while it holds the row locks that batches of every partition
-- share. Versions only grow, as before; they now grow in jumps.
CREATE SEQUENCE stock_versions;
SELECT setval('stock_versions', GREATEST((SELECT max(version) FROM stock), 1));
