-- The two roles of a least-privilege deployment (run once, as a superuser; the official
-- postgres image runs it from /docker-entrypoint-initdb.d on a new data directory):
--   crier_owner owns the database and its schema; `crier migrate` runs as it.
--   crier_app owns nothing; `crier serve` runs as it, with what `crier migrate --app-role`
--   grants: it may read the history and add to it, never change, delete or truncate it, nor
--   alter or disable its triggers.
-- Change the passwords (or use another authentication method) before any real use.
CREATE ROLE crier_owner LOGIN PASSWORD 'crier-owner-change-me';
CREATE ROLE crier_app LOGIN PASSWORD 'crier-app-change-me';
CREATE DATABASE crier OWNER crier_owner;
\connect crier
ALTER SCHEMA public OWNER TO crier_owner;
