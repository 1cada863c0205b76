-- SIP registration agent: the SEMS db_reg_agent tables (apps/db_reg_agent/README) in PostgreSQL types.
-- "user" is a reserved word here: quoted in DDL; `subscribers.user` in a query needs no quotes.
-- Times are TIMESTAMP without time zone in the server's local time, as SEMS's DATETIME columns.
CREATE TABLE IF NOT EXISTS subscribers (
  subscriber_id SERIAL PRIMARY KEY,
  "user" VARCHAR(256) NOT NULL,
  pass VARCHAR(256) NOT NULL,
  realm VARCHAR(256) NOT NULL,
  contact VARCHAR(256) NOT NULL DEFAULT ''
);

CREATE TABLE IF NOT EXISTS registrations (
  subscriber_id INTEGER PRIMARY KEY,
  registration_status SMALLINT NOT NULL DEFAULT 0,
  last_registration TIMESTAMP(0),
  expiry TIMESTAMP(0),
  last_code SMALLINT,
  last_reason VARCHAR(256),
  contacts VARCHAR(512)
);

CREATE INDEX IF NOT EXISTS registrations_status ON registrations (registration_status);
