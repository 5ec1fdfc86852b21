-- Up Migration

-- Room on each page for a sign-in's outcome. A row is inserted at its start and, when the outcome
-- comes in a later batch, updated on the same page: a HOT update, which writes no index
-- entry (the outcome columns are in no index). Packed full (the default, 100), the update moved
-- the row to another page and added an entry to each of the three indexes: at 2,000 TOTP
-- sign-ins a second, 9 % of the updates were HOT at 100 and 52 % at 80, and Postgres spent
-- 12 µs less per sign-in (docs/performance.md, issue 18, seventeenth part). Only pages written
-- from now on are filled to 80 %: the table is not rewritten.
ALTER TABLE signins SET (fillfactor = 80);

-- Down Migration

ALTER TABLE signins RESET (fillfactor);
