-- An archive written by audit-monitor at schema 4 (before prune records); see tests/test_store.py.
PRAGMA user_version=4;
BEGIN TRANSACTION;
CREATE TABLE alerts (
            id TEXT PRIMARY KEY,
            rule_id TEXT NOT NULL,
            severity TEXT NOT NULL,
            title TEXT NOT NULL,
            text TEXT NOT NULL,
            source TEXT NOT NULL,
            event_time TEXT NOT NULL,
            event_ids TEXT NOT NULL,            -- JSON list
            group_key TEXT NOT NULL,
            fields TEXT NOT NULL,               -- JSON object
            context TEXT NOT NULL,              -- JSON object
            suppressed_count INTEGER NOT NULL,
            tags TEXT NOT NULL,                 -- JSON list
            recorded_at TEXT NOT NULL
        );
CREATE TABLE cursors (
            source TEXT PRIMARY KEY,
            last_id INTEGER,                    -- highest event id handled
            last_created_at TEXT,               -- its created_at
            floor_id INTEGER,                   -- backfill none: ids at or below are never archived
            floor_time TEXT,                    -- backfill from a date: older events are never archived
            last_success_at TEXT,
            last_attempt_at TEXT,
            last_error TEXT,
            last_error_at TEXT,
            error_kind TEXT                     -- auth | unavailable | protocol | store | null
        );
CREATE TABLE events (
            seq INTEGER PRIMARY KEY,            -- archive order; the hash chain follows it
            source TEXT NOT NULL,
            event_id INTEGER NOT NULL,
            created_at TEXT NOT NULL,           -- ISO 8601 UTC, microseconds: sorts as text
            created_ms INTEGER NOT NULL,        -- epoch ms, for range queries
            type TEXT NOT NULL,
            msg TEXT NOT NULL,
            user_email TEXT,
            workspace_name TEXT,
            branch_label TEXT,
            raw TEXT NOT NULL,                  -- the entry exactly as served (canonical JSON)
            archived_at TEXT NOT NULL,
            hash TEXT NOT NULL,
            UNIQUE (source, event_id)
        );
INSERT INTO "events" VALUES(6,'prod',6,'2026-03-01T15:00:00.000000+00:00',1772377200000,'Update Function','event 6','ana@corp.io','shop',NULL,'{"created_at":"2026-03-01T15:00:00+00:00","id":6,"msg":"event 6","type":"Update Function","user":{"email":"ana@corp.io","id":1},"workspace":{"id":1,"name":"shop"}}','2026-03-01T09:00:00.000000+00:00','f0d2c9648479ab4eeb4d0c233af3ceaab95b5239e2fb273bd17859d813bba357');
INSERT INTO "events" VALUES(7,'prod',7,'2026-03-01T16:00:00.000000+00:00',1772380800000,'Update Function','event 7','ana@corp.io','shop',NULL,'{"created_at":"2026-03-01T16:00:00+00:00","id":7,"msg":"event 7","type":"Update Function","user":{"email":"ana@corp.io","id":1},"workspace":{"id":1,"name":"shop"}}','2026-03-01T09:00:00.000000+00:00','32c27c9976a99ed6e68bc5fa32455a1da7f9a3d19ed3775e9aff79fec44e92c4');
INSERT INTO "events" VALUES(8,'prod',8,'2026-03-01T17:00:00.000000+00:00',1772384400000,'Update Function','event 8','ana@corp.io','shop',NULL,'{"created_at":"2026-03-01T17:00:00+00:00","id":8,"msg":"event 8","type":"Update Function","user":{"email":"ana@corp.io","id":1},"workspace":{"id":1,"name":"shop"}}','2026-03-01T09:00:00.000000+00:00','0200881df557ee908d1526a1baf4356a7f2d25fd0804f523e06dc5edadd6a13f');
INSERT INTO "events" VALUES(9,'prod',9,'2026-03-01T18:00:00.000000+00:00',1772388000000,'Update Function','event 9','ana@corp.io','shop',NULL,'{"created_at":"2026-03-01T18:00:00+00:00","id":9,"msg":"event 9","type":"Update Function","user":{"email":"ana@corp.io","id":1},"workspace":{"id":1,"name":"shop"}}','2026-03-01T09:00:00.000000+00:00','9a461c0280361f0b18d9b8224d86f49e909b8d4c0007767384b74460f4f05a2e');
INSERT INTO "events" VALUES(10,'prod',10,'2026-03-01T19:00:00.000000+00:00',1772391600000,'Update Function','event 10','ana@corp.io','shop',NULL,'{"created_at":"2026-03-01T19:00:00+00:00","id":10,"msg":"event 10","type":"Update Function","user":{"email":"ana@corp.io","id":1},"workspace":{"id":1,"name":"shop"}}','2026-03-01T09:00:00.000000+00:00','99e2ea68e0963a3cd799a17dd5f1019ab7a58fdb8242031d58c661b1c5147262');
INSERT INTO "events" VALUES(11,'prod',11,'2026-03-01T20:00:00.000000+00:00',1772395200000,'Update Function','event 11','ana@corp.io','shop',NULL,'{"created_at":"2026-03-01T20:00:00+00:00","id":11,"msg":"event 11","type":"Update Function","user":{"email":"ana@corp.io","id":1},"workspace":{"id":1,"name":"shop"}}','2026-03-01T09:00:00.000000+00:00','c054c94dae0084de8712ebf581f2f184f213678f275f4b94cb40d4c8cb32aa35');
INSERT INTO "events" VALUES(12,'prod',12,'2026-03-01T21:00:00.000000+00:00',1772398800000,'Update Function','event 12','ana@corp.io','shop',NULL,'{"created_at":"2026-03-01T21:00:00+00:00","id":12,"msg":"event 12","type":"Update Function","user":{"email":"ana@corp.io","id":1},"workspace":{"id":1,"name":"shop"}}','2026-03-01T09:00:00.000000+00:00','faeec25103a737584ca913871d050cf15c9c830c788d423de6e60b5d3cf64cbb');
CREATE TABLE gaps (
            id INTEGER PRIMARY KEY,
            source TEXT NOT NULL,
            kind TEXT NOT NULL,                 -- polling | retention
            start TEXT NOT NULL,
            end TEXT NOT NULL,
            detail TEXT NOT NULL,
            recorded_at TEXT NOT NULL
        );
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO "meta" VALUES('chain_anchor_hash','03d27c9d45e1bca9fc4e4d1c6bc302fe0455144bddc05ea714023e14528e6e42');
INSERT INTO "meta" VALUES('chain_anchor_pruned_at','2026-12-01T07:32:22.064600+00:00');
CREATE TABLE outbox (
            alert_id TEXT NOT NULL REFERENCES alerts(id),
            channel TEXT NOT NULL,
            status TEXT NOT NULL,               -- pending | sent | dead
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT NOT NULL,
            first_attempt_at TEXT,
            last_error TEXT,
            sent_at TEXT,
            remote_id TEXT,                     -- Slack ts / email Message-ID
            PRIMARY KEY (alert_id, channel)
        );
CREATE TABLE rejected (
            source TEXT NOT NULL,
            raw_sha256 TEXT NOT NULL,
            raw TEXT NOT NULL,
            reason TEXT NOT NULL,
            seen_at TEXT NOT NULL,
            PRIMARY KEY (source, raw_sha256)
        );
CREATE TABLE reports (
            period TEXT PRIMARY KEY,            -- YYYY-MM, a calendar month in the configured timezone
            status TEXT NOT NULL,               -- sending | sent | failed | written (no recipients)
            claimed_at TEXT NOT NULL,
            claimed_by TEXT NOT NULL,           -- host:pid:nonce of the process holding the claim
            attempts INTEGER NOT NULL DEFAULT 0,
            sent_at TEXT,
            message_id TEXT,
            error TEXT
        );
CREATE TABLE rule_state (
            rule_id TEXT NOT NULL,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (rule_id, key)
        );
CREATE TABLE staging (
            source TEXT NOT NULL,
            event_id INTEGER NOT NULL,
            created_at TEXT NOT NULL,           -- as in events: ISO 8601 UTC, microseconds
            created_ms INTEGER NOT NULL,
            type TEXT NOT NULL,
            msg TEXT NOT NULL,
            user_email TEXT,
            workspace_name TEXT,
            branch_label TEXT,
            raw TEXT NOT NULL,                  -- canonical JSON
            PRIMARY KEY (source, event_id)
        );
CREATE INDEX "idx_events_created_ms"
    ON "events" ("created_ms");
CREATE INDEX "idx_events_type"
    ON "events" ("type");
CREATE INDEX "idx_events_user_email"
    ON "events" ("user_email");
CREATE INDEX "idx_events_workspace_name"
    ON "events" ("workspace_name");
CREATE INDEX "idx_alerts_event_time"
    ON "alerts" ("event_time");
CREATE INDEX "idx_outbox_status_next_attempt_at"
    ON "outbox" ("status", "next_attempt_at");
CREATE INDEX "idx_events_source_created_ms"
    ON "events" ("source", "created_ms");
COMMIT;
