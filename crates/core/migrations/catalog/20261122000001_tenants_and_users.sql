-- Catalog database: who the tenants are and who may log in.
CREATE TABLE tenant (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL,
    description text NULL
);

CREATE TABLE "user" (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id  uuid NOT NULL REFERENCES tenant (id),
    username   text NOT NULL,
    -- argon2id PHC string: algorithm, parameters, per-user salt and hash.
    password   text NOT NULL,
    tax_id     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Login takes no tenant, so usernames are unique across all tenants, compared case-insensitively.
CREATE UNIQUE INDEX user_username_key ON "user" (lower(username));
CREATE INDEX user_tenant_id_idx ON "user" (tenant_id);
