-- Version 2 (PostgreSQL): one row per run of the service against this store, so that a run that ended without
-- a clean shutdown (kill -9, a crash, the power) is found and counted by the next run of the same instance, with
-- what can still be known: when the run started, how many cards it wrote and when it last wrote any. Kept in
-- step with ../sqlite/0002_service_runs.sql; only the types differ.

CREATE TABLE service_runs (
    run_id            TEXT    NOT NULL PRIMARY KEY,
    instance          TEXT    NOT NULL,  -- host name and configured listen port
    started_at_ms     BIGINT  NOT NULL,
    last_write_at_ms  BIGINT,            -- the last card-log batch this run wrote
    cards_written     BIGINT  NOT NULL DEFAULT 0,
    stopped_at_ms     BIGINT,            -- NULL while running (or until the next run finds it)
    clean             BOOLEAN            -- TRUE: shut down cleanly; FALSE: found open by a later run
);
CREATE INDEX service_runs_open ON service_runs (instance) WHERE stopped_at_ms IS NULL;
