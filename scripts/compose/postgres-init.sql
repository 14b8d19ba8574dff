-- docker-compose.test.yml mounts this into the pgvector image's
-- /docker-entrypoint-initdb.d/: it runs once, on an empty data directory,
-- as POSTGRES_USER (vectorgate, a superuser there) in POSTGRES_DB
-- (vectorgate). The native equivalent is pg_setup_database in
-- scripts/services.sh.
CREATE EXTENSION IF NOT EXISTS vector;
