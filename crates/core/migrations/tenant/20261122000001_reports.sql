-- Tenant database: one physical database per tenant, same schema in each.
CREATE TYPE report_content_status AS ENUM ('in_progress', 'completed', 'failed');

CREATE TABLE report (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid NOT NULL,
    user_id     uuid NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz NULL
);

-- The reconciler scans reports that are not finished yet; keep that scan off the finished majority.
CREATE INDEX report_unfinished_idx ON report (started_at) WHERE finished_at IS NULL;

CREATE TABLE report_contents (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    report_id   uuid NOT NULL REFERENCES report (id) ON DELETE CASCADE,
    source      text NOT NULL,
    status      report_content_status NOT NULL DEFAULT 'in_progress',
    -- The source's document once completed, or the failure reason once failed.
    data        text NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    last_run_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT report_contents_report_id_source_key UNIQUE (report_id, source)
);

CREATE INDEX report_contents_report_id_idx ON report_contents (report_id);
-- The reconciler looks for in-progress contents that no workflow has touched for a while.
CREATE INDEX report_contents_in_progress_idx ON report_contents (last_run_at) WHERE status = 'in_progress';

-- UPDATE events then carry the whole "before" row, so the CDC worker sees the status transition.
ALTER TABLE report_contents REPLICA IDENTITY FULL;

-- Written by Debezium's heartbeat.action.query so that an idle tenant's replication slot keeps
-- advancing (all slots share the cluster's WAL). In the publication, never in table.include.list.
CREATE TABLE cdc_heartbeat (
    id int PRIMARY KEY,
    ts timestamptz NOT NULL
);

-- Debezium runs with publication.autocreate.mode=disabled: only these tables are ever decoded.
CREATE PUBLICATION dbz_report_contents FOR TABLE report_contents, cdc_heartbeat;
