-- An archive written by audit-monitor at schema 6 (the last release before the store package
-- and Alembic): 13 events, a prune, rule state, alerts with outbox rows, a gap, a report claim.
PRAGMA user_version=6;
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
INSERT INTO "alerts" VALUES('34e19859f7f6599289b5568f7556b442','critical-delete','high','Table deleted 1','t','prod','2026-03-01T13:00:00.000000+00:00','[4]','1','{}','{}',0,'[]','2026-03-02T09:00:00.000000+00:00');
INSERT INTO "alerts" VALUES('e7618e75f755c70cf88611a596db4fbb','critical-delete','high','Table deleted 2','t','prod','2026-03-01T17:00:00.000000+00:00','[8]','2','{}','{}',0,'[]','2026-03-02T09:00:00.000000+00:00');
INSERT INTO "alerts" VALUES('1feace443fdff619705e6e8bc88e6081','critical-delete','high','Table deleted 3','t','prod','2026-03-01T21:00:00.000000+00:00','[12]','3','{}','{}',0,'[]','2026-03-02T09:00:00.000000+00:00');
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
INSERT INTO "cursors" VALUES('prod',12,'2026-03-01T21:00:00.000000+00:00',NULL,NULL,'2026-03-02T09:00:00.000000+00:00',NULL,NULL,NULL,NULL);
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
INSERT INTO "events" VALUES(4,'prod',4,'2026-03-01T13:00:00.000000+00:00',1772370000000,'Delete Table','event 4','ana@corp.io','shop',NULL,'{"created_at":"2026-03-01T13:00:00+00:00","id":4,"msg":"event 4","type":"Delete Table","user":{"email":"ana@corp.io","id":1},"workspace":{"id":1,"name":"shop"}}','2026-03-02T09:00:00.000000+00:00','bd93ed59e6572aa5b0e25bc43d1501d9301b524aeaa95be33dc80e4eccb31b5a');
INSERT INTO "events" VALUES(5,'prod',5,'2026-03-01T14:00:00.000000+00:00',1772373600000,'Update Function','event 5','ana@corp.io','shop',NULL,'{"created_at":"2026-03-01T14:00:00+00:00","id":5,"msg":"event 5","type":"Update Function","user":{"email":"ana@corp.io","id":1},"workspace":{"id":1,"name":"shop"}}','2026-03-02T09:00:00.000000+00:00','0dd2233ad9489de17ce6ce39e03c79d1341909bc3937a992d14f41f89b33ee5e');
INSERT INTO "events" VALUES(6,'prod',6,'2026-03-01T15:00:00.000000+00:00',1772377200000,'Update Function','event 6','ana@corp.io','shop',NULL,'{"created_at":"2026-03-01T15:00:00+00:00","id":6,"msg":"event 6","type":"Update Function","user":{"email":"ana@corp.io","id":1},"workspace":{"id":1,"name":"shop"}}','2026-03-02T09:00:00.000000+00:00','5cd5c43e361dcb2edc59f6ddb7507bb6862298b1e905eaa6a8e206f288c6caeb');
INSERT INTO "events" VALUES(7,'prod',7,'2026-03-01T16:00:00.000000+00:00',1772380800000,'Update Function','event 7','ana@corp.io','shop',NULL,'{"created_at":"2026-03-01T16:00:00+00:00","id":7,"msg":"event 7","type":"Update Function","user":{"email":"ana@corp.io","id":1},"workspace":{"id":1,"name":"shop"}}','2026-03-02T09:00:00.000000+00:00','e4cc08ee3c49c872e3d96040453dd9696fd27e16d13f3cf3b6706f8d6f0dbb01');
INSERT INTO "events" VALUES(8,'prod',8,'2026-03-01T17:00:00.000000+00:00',1772384400000,'Delete Table','event 8','ana@corp.io','shop',NULL,'{"created_at":"2026-03-01T17:00:00+00:00","id":8,"msg":"event 8","type":"Delete Table","user":{"email":"ana@corp.io","id":1},"workspace":{"id":1,"name":"shop"}}','2026-03-02T09:00:00.000000+00:00','b632df4ee2cf5732000137e90f6e356c31b1e350f53163c66c44d7cbe014e1c1');
INSERT INTO "events" VALUES(9,'prod',9,'2026-03-01T18:00:00.000000+00:00',1772388000000,'Update Function','event 9','ana@corp.io','shop',NULL,'{"created_at":"2026-03-01T18:00:00+00:00","id":9,"msg":"event 9","type":"Update Function","user":{"email":"ana@corp.io","id":1},"workspace":{"id":1,"name":"shop"}}','2026-03-02T09:00:00.000000+00:00','2f651e99777e55a672c68310aa955b9750a6b1ce9199f1b041f6c8e15c4f1840');
INSERT INTO "events" VALUES(10,'prod',10,'2026-03-01T19:00:00.000000+00:00',1772391600000,'Update Function','event 10','ana@corp.io','shop',NULL,'{"created_at":"2026-03-01T19:00:00+00:00","id":10,"msg":"event 10","type":"Update Function","user":{"email":"ana@corp.io","id":1},"workspace":{"id":1,"name":"shop"}}','2026-03-02T09:00:00.000000+00:00','63b8b044f6bc4b64880c8f956b8c0b1a7926fffc9b92f2cfb6e29130044d22a0');
INSERT INTO "events" VALUES(11,'prod',11,'2026-03-01T20:00:00.000000+00:00',1772395200000,'Update Function','event 11','ana@corp.io','shop',NULL,'{"created_at":"2026-03-01T20:00:00+00:00","id":11,"msg":"event 11","type":"Update Function","user":{"email":"ana@corp.io","id":1},"workspace":{"id":1,"name":"shop"}}','2026-03-02T09:00:00.000000+00:00','981ee594a9eeee735ca30236d2a463fb5a079f5ccdd83aaf348b65d93de14967');
INSERT INTO "events" VALUES(12,'prod',12,'2026-03-01T21:00:00.000000+00:00',1772398800000,'Delete Table','event 12','ana@corp.io','shop',NULL,'{"created_at":"2026-03-01T21:00:00+00:00","id":12,"msg":"event 12","type":"Delete Table","user":{"email":"ana@corp.io","id":1},"workspace":{"id":1,"name":"shop"}}','2026-03-02T09:00:00.000000+00:00','f52ec9a91cef8daedfc5fe8bda95e1fd69ec1f00e3942a8f95c78149ecc7a50b');
INSERT INTO "events" VALUES(14,'prod',13,'2026-03-01T22:00:00.000000+00:00',1772402400000,'Update Function','event 13','ana@corp.io','shop',NULL,'{"created_at":"2026-03-01T22:00:00+00:00","id":13,"msg":"event 13","type":"Update Function","user":{"email":"ana@corp.io","id":1},"workspace":{"id":1,"name":"shop"}}','2026-03-03T09:00:00.000000+00:00','09e030965fdaf33aa77b627ae31588ef60ae1a20bc40a21556034a9c453bfec0');
CREATE TABLE gaps (
            id INTEGER PRIMARY KEY,
            source TEXT NOT NULL,
            kind TEXT NOT NULL,                 -- polling | retention
            start TEXT NOT NULL,
            end TEXT NOT NULL,
            detail TEXT NOT NULL,
            recorded_at TEXT NOT NULL
        );
INSERT INTO "gaps" VALUES(1,'prod','polling','2026-03-01T09:00:00.000000+00:00','2026-03-01T10:00:00.000000+00:00','1 hour','2026-03-02T09:00:00.000000+00:00');
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO "meta" VALUES('chain_anchor_hash','d8c4dbf14a0f7fc9b78859c44a9f6fd27d847e1688e437a98fd181be4387645f');
INSERT INTO "meta" VALUES('chain_anchor_pruned_at','2026-03-03T09:00:00.000000+00:00');
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
INSERT INTO "outbox" VALUES('34e19859f7f6599289b5568f7556b442','slack','sent',1,'2026-03-02T09:00:00.000000+00:00',NULL,NULL,NULL,'1700000000.000100');
INSERT INTO "outbox" VALUES('34e19859f7f6599289b5568f7556b442','email','pending',0,'2026-03-02T09:00:00.000000+00:00',NULL,NULL,NULL,NULL);
INSERT INTO "outbox" VALUES('e7618e75f755c70cf88611a596db4fbb','slack','dead',1,'2026-03-02T09:00:00.000000+00:00',NULL,NULL,NULL,NULL);
INSERT INTO "outbox" VALUES('e7618e75f755c70cf88611a596db4fbb','email','pending',0,'2026-03-02T09:00:00.000000+00:00',NULL,NULL,NULL,NULL);
INSERT INTO "outbox" VALUES('1feace443fdff619705e6e8bc88e6081','slack','pending',1,'2026-03-02T09:00:00.000000+00:00',NULL,NULL,NULL,NULL);
INSERT INTO "outbox" VALUES('1feace443fdff619705e6e8bc88e6081','email','pending',0,'2026-03-02T09:00:00.000000+00:00',NULL,NULL,NULL,NULL);
CREATE TABLE prunes (
            seq INTEGER PRIMARY KEY,            -- its place in the chain, in the events' seq order
            at TEXT NOT NULL,                   -- when the prune ran
            cutoff TEXT,                        -- events older than this were cut (null: an older release's)
            cut INTEGER,                        -- rows deleted (null: an older release's prune)
            through_seq INTEGER NOT NULL,       -- the last chain link cut: the kept chain starts after it
            through_hash TEXT NOT NULL,         -- that link's hash
            hash TEXT NOT NULL
        );
INSERT INTO "prunes" VALUES(13,'2026-03-03T09:00:00.000000+00:00','2026-03-01T12:30:00.000000+00:00',3,3,'d8c4dbf14a0f7fc9b78859c44a9f6fd27d847e1688e437a98fd181be4387645f','2f31e3e69fe126836e174698cd6ad25e05677f7461dec85b903eefc1daa422dd');
CREATE TABLE rejected (
            source TEXT NOT NULL,
            raw_sha256 TEXT NOT NULL,
            raw TEXT NOT NULL,
            reason TEXT NOT NULL,
            seen_at TEXT NOT NULL,
            PRIMARY KEY (source, raw_sha256)
        );
INSERT INTO "rejected" VALUES('prod','bb0f62ef7e668fdd9ba2ecfb7cc67842f010d0374a76b92f2654308a42e84a39','{"id":"junk"}','no created_at','2026-03-02T09:00:00.000000+00:00');
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
INSERT INTO "reports" VALUES('2026-02','sent','2026-03-01T06:00:00.000000+00:00','h:1:abc',1,'2026-03-01T06:00:05.000000+00:00','<r@x>',NULL);
CREATE TABLE "rule_state" (
            rule_id TEXT NOT NULL,
            source TEXT NOT NULL,               -- '' = shared by every source
            key TEXT NOT NULL,
            value TEXT NOT NULL,                -- JSON
            expires_at INTEGER,                 -- event time (µs since the epoch) when it is of no more use;
                                                -- NULL = kept
            PRIMARY KEY (rule_id, source, key)
        );
INSERT INTO "rule_state" VALUES('burst','prod','g:["ana@corp.io"]','[[1,1,null,"Login Failed"]]',1099511627776);
INSERT INTO "rule_state" VALUES('monitor.delivery_failing','','slack','{"since":"2026-03-02T00:00:00.000000+00:00","alert_id":"x"}',NULL);
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
CREATE INDEX rule_state_expiry ON rule_state (source, expires_at) WHERE expires_at IS NOT NULL;
COMMIT;
