-- Traces: the W3C traceparent of the API span that wrote the row (NULL with traces off, and for
-- rows written before). Debezium's events carry only row data, so this is how the CDC worker
-- makes its span a child of the API's. Written once at INSERT, never updated.
ALTER TABLE report_contents ADD COLUMN trace_parent text NULL;
