-- Roles a tenant defines for itself (gateway/permissions.py): a name and its permissions, each `action:pattern`
-- as `gateway role create` checked it. The built-in roles live in the code and are not stored.
CREATE TABLE tenant_role (
    tenant_id    integer NOT NULL REFERENCES tenant (id),
    name         text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_.-]{0,63}$'),
    permissions  text[] NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);

-- A user's role is a built-in role's name or one of its tenant's roles, no longer one of three words. Which
-- of them it names is checked by the command line; a name neither defines grants nothing.
ALTER TABLE app_user DROP CONSTRAINT app_user_role_check;
ALTER TABLE app_user ADD CONSTRAINT app_user_role_name CHECK (role ~ '^[a-z][a-z0-9_.-]{0,63}$');
