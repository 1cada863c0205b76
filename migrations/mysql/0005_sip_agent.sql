-- SIP registration agent: the SEMS db_reg_agent tables, column for column (apps/db_reg_agent/README), so an
-- existing SEMS database and this one are interchangeable. InnoDB instead of MyISAM; contact gets a default.
CREATE TABLE IF NOT EXISTS subscribers (
  subscriber_id int(10) NOT NULL AUTO_INCREMENT,
  user varchar(256) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  pass varchar(256) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  realm varchar(256) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  contact varchar(256) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT '',
  PRIMARY KEY (subscriber_id)
) ENGINE=InnoDB DEFAULT CHARSET=latin1;

CREATE TABLE IF NOT EXISTS registrations (
  subscriber_id int(11) NOT NULL,
  registration_status tinyint(1) NOT NULL DEFAULT '0',
  last_registration datetime,
  expiry datetime,
  last_code smallint(2),
  last_reason varchar(256),
  contacts varchar(512),
  PRIMARY KEY (subscriber_id),
  KEY registrations_status (registration_status)
) ENGINE=InnoDB DEFAULT CHARSET=latin1;
