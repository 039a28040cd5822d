-- PostgreSQL for two (or more) rtbhd: one database, one role. rtbhd
-- creates and migrates its tables itself at start (rtbh_schema records the
-- version), so the role owns the database.
--
--   sudo -u postgres psql -v pw="'choose-a-password'" -f deploy/ha/postgres-setup.sql
--
-- Then, on each rtbhd host, put the password in /etc/rtbhd/pgpassword
-- (mode 0400, owner rtbhd) — store.password_file — or export PGPASSWORD.
-- In pg_hba.conf allow only the route servers, with scram-sha-256 over TLS:
--
--   hostssl rtbh rtbh 192.0.2.10/32 scram-sha-256   # rs1
--   hostssl rtbh rtbh 192.0.2.11/32 scram-sha-256   # rs2
--
-- PostgreSQL itself is where the ISP's usual replication goes (streaming
-- replication with a synchronous standby, Patroni, a managed service):
-- point store.dsn at the primary's service address. rtbhd keeps
-- announcing the last known set while the database fails over, answers
-- writes UNAVAILABLE meanwhile, and resyncs by itself when it is back.

CREATE ROLE rtbh LOGIN PASSWORD :pw;
CREATE DATABASE rtbh OWNER rtbh;
\connect rtbh
-- PostgreSQL 15+: public is no longer writable by everyone; the owner of
-- the database needs it for rtbhd's tables.
ALTER SCHEMA public OWNER TO rtbh;
