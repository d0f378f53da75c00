-- Version 1 (SQLite): the card log, the feedback store and the shared jti cache.
-- Kept in step with ../postgres/0001_card_log_feedback_jti.sql: same tables, columns and keys; only the types
-- differ (SQLite has no BOOLEAN or BYTEA). Times are Unix milliseconds (UTC) in BIGINT columns, so the same
-- integer arithmetic (retention, ISO weeks) gives the same answers on both backends.
-- No column holds a patient identifier: cards are keyed by their own uuid, and hook_instance identifies the
-- call, not the patient.

CREATE TABLE cards (
    uuid             TEXT    NOT NULL PRIMARY KEY,
    service_id       TEXT    NOT NULL,
    card             TEXT    NOT NULL,  -- template id in cards/cards/
    indicator        TEXT    NOT NULL,
    stance           TEXT    NOT NULL,
    suggestion_uuids TEXT    NOT NULL,  -- JSON array of strings
    issued_at_ms     BIGINT  NOT NULL,
    client_issuer    TEXT,
    tenant           TEXT,
    hook_instance    TEXT    NOT NULL
);
CREATE INDEX cards_issued_at ON cards (issued_at_ms);

CREATE TABLE feedback (
    card_uuid              TEXT    NOT NULL,
    outcome                TEXT    NOT NULL CHECK (outcome IN ('accepted', 'overridden')),
    outcome_at_ms          BIGINT  NOT NULL,
    service_id             TEXT    NOT NULL,
    accepted_suggestions   TEXT    NOT NULL,  -- JSON array of strings
    override_reason_code   TEXT,
    override_reason_system TEXT,
    user_comment           TEXT,
    received_at_ms         BIGINT  NOT NULL,
    client_issuer          TEXT,
    unknown_card           INTEGER NOT NULL CHECK (unknown_card IN (0, 1)),
    -- One clinician action is one (card, outcome, instant): a resent item is the same row.
    PRIMARY KEY (card_uuid, outcome, outcome_at_ms)
);
CREATE INDEX feedback_received_at ON feedback (received_at_ms);
CREATE INDEX feedback_unknown ON feedback (card_uuid) WHERE unknown_card = 1;

CREATE TABLE jti_seen (
    key        BLOB    NOT NULL PRIMARY KEY,  -- SHA-256 of (issuer, jti)
    expires_at BIGINT  NOT NULL               -- Unix seconds
);
CREATE INDEX jti_seen_expires ON jti_seen (expires_at);
