-- Version 3 (SQLite): which guidance content wrote each card (`declared+digest`, see docs/versions.md), so that
-- override rates can be compared across a content edit. Cards logged before this version have NULL: analytics
-- shows them as "before content versions". Kept in step with ../postgres/0003_card_content_version.sql.

ALTER TABLE cards ADD COLUMN content_version TEXT;
