-- Live updates (GraphQL `reportUpdated`): every API process LISTENs on `report_updated` in each
-- tenant database it serves and re-reads the named report when told. The payload is the report
-- id only: a notification carries no data, so it leaks nothing and stays far below NOTIFY's
-- 8000-byte limit; subscribers read the report through the same scoped queries as `report`.
--
-- Fired only on changes a client sees: a content's status or data, a report's finished_at.
-- The pollers' `last_run_at` updates (every POLL_INTERVAL per content) are filtered out by the
-- WHEN clauses, so they do not even call the function. NOTIFY is sent at commit, and several
-- identical notifications of one transaction are delivered once.
CREATE FUNCTION notify_report_updated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'report' THEN
        PERFORM pg_notify('report_updated', NEW.id::text);
    ELSE
        PERFORM pg_notify('report_updated', NEW.report_id::text);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER report_contents_updated_notify
    AFTER UPDATE ON report_contents
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.data IS DISTINCT FROM NEW.data)
    EXECUTE FUNCTION notify_report_updated();

CREATE TRIGGER report_finished_notify
    AFTER UPDATE ON report
    FOR EACH ROW
    WHEN (OLD.finished_at IS DISTINCT FROM NEW.finished_at)
    EXECUTE FUNCTION notify_report_updated();
