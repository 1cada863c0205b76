-- SIP registration agent: the SEMS db_reg_agent tables (apps/db_reg_agent/README) in SQLite types.
-- Times are 'YYYY-MM-DD HH:MM:SS' text in UTC (SQLite's datetime('now')).
CREATE TABLE IF NOT EXISTS subscribers (
  subscriber_id INTEGER PRIMARY KEY AUTOINCREMENT,
  user TEXT NOT NULL,
  pass TEXT NOT NULL,
  realm TEXT NOT NULL,
  contact TEXT NOT NULL DEFAULT ''
);

CREATE TABLE IF NOT EXISTS registrations (
  subscriber_id INTEGER PRIMARY KEY,
  registration_status INTEGER NOT NULL DEFAULT 0,
  last_registration TEXT,
  expiry TEXT,
  last_code INTEGER,
  last_reason TEXT,
  contacts TEXT
);

CREATE INDEX IF NOT EXISTS registrations_status ON registrations (registration_status);
